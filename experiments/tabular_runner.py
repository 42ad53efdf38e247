"""The run contract for tabular methods: same folder layout and rows as the deep runner, no replay or agent.

A tabular run takes seconds, so it has no intermediate checkpoints: a killed run starts again. For
fitted_q the ``step`` column counts FQI iterations k and ``frames`` holds the batch size in agent steps of
the behaviour policy (--steps); for q_learning both count agent steps.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from algorithms import tabular
from envs.toy import make_mdp, make_toy
from experiments.config import RunConfig
from experiments.contract import Row, run_id
from experiments.runner import CHECKPOINT_FORMAT, env_seed


class TabularRunner:
    def __init__(self, cfg: RunConfig, device: torch.device):
        self.cfg = cfg
        self.protocol = cfg.run.protocol or "exact"
        self.mdp = make_mdp(cfg.env)
        self.env = make_toy(cfg.env, [env_seed(s, "env") for s in cfg.seeds])  # for provenance fields only
        self.run_id = run_id(cfg.algo, cfg.env, cfg.hash())

    def train(self, state: dict | None) -> Iterator[tuple[str, dict]]:
        c = self.cfg
        # the member seeds drive the method's own streams (env, explore, behaviour); see algorithms/tabular.py
        cps = tabular.checkpoints(c.algo_config, self.mdp, c.seeds, c.steps)
        fqi = c.algo_config.method == "fitted_q"
        rows = [tuple(Row(self.run_id, c.run.suite, c.algo, c.env, self.protocol, r["seed"], r["step"],
                          c.steps if fqi else r["step"], 0, r["metric"], r["value"]))
                for r in tabular.metric_rows(cps, self.mdp, c.seeds)]
        yield "done", {"format": CHECKPOINT_FORMAT, "config_hash": c.hash(), "step": c.steps, "rows": rows,
                       "status": "complete"}
