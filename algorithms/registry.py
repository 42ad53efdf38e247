"""Named algorithm variants: each is a family plus the flags that make it, with its citation.

A variant never copies a file: ``double_dqn`` is ``dqn`` with ``double=True``. Families are imported lazily
so that a discrete-only install path does not pay for the continuous-action code.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Variant:
    name: str
    family: str  # module in algorithms/ providing Config, Agent (or a trainer), PRESETS and validate
    overrides: dict = field(default_factory=dict)
    citation: str = ""
    actions: str = "discrete"  # discrete | continuous | tabular


_V = [
    Variant("dqn", "dqn", {}, "Mnih et al. 2015, Nature"),
    Variant("double_dqn", "dqn", {"double": True}, "van Hasselt, Guez, Silver 2016"),
    # Wang et al. 2016 (Sec. 4.2) build the dueling network on Double DQN targets, clip gradients to norm 10
    # and lower the learning rate to 6.25e-5 (the 1/sqrt(2) gradient rescaling is in networks.QNetwork).
    Variant("dueling_dqn", "dqn", {"dueling": True, "double": True, "grad_clip_norm": 10.0, "lr": 6.25e-5},
            "Wang et al. 2016"),
    # Wang et al. 2016's "Single Clip" baseline: Double DQN with the dueling recipe's clipping and step size,
    # so a comparison with dueling_dqn isolates the architecture.
    Variant("double_dqn_clip", "dqn", {"double": True, "grad_clip_norm": 10.0, "lr": 6.25e-5},
            "Wang et al. 2016, Single Clip (Double DQN with gradient clipping)"),
    # Schaul et al. 2016 add prioritized replay to Double DQN and divide the step size by 4.
    Variant("per_dqn", "dqn", {"sampler": "proportional", "double": True, "per_alpha": 0.6, "per_beta0": 0.4,
                               "lr": 2.5e-4 / 4}, "Schaul et al. 2016 (proportional)"),
    Variant("per_rank_dqn", "dqn", {"sampler": "rank", "double": True, "per_alpha": 0.7, "per_beta0": 0.5,
                                    "lr": 2.5e-4 / 4}, "Schaul et al. 2016 (rank-based)"),
    Variant("nstep_dqn", "dqn", {"n_step": 3}, "Sutton 1988; n = 3 as in Hessel et al. 2018"),
    # Hessel et al. 2018 without the distributional head and noisy nets: the parts this suite ablates.
    Variant("combined_dqn", "dqn", {"double": True, "dueling": True, "n_step": 3, "sampler": "proportional",
                                    "per_alpha": 0.5, "per_beta0": 0.4}, "Hessel et al. 2018 (subset)"),
    # Continuous actions: the three ways to take max_u Q of Levine's CS 285, and Gu et al. 2016's model-based
    # acceleration of NAF (Algorithm 2) with its ablations (Sec. 5, Fig. 2).
    Variant("ddpg", "ddpg", {}, "Lillicrap et al. 2016", "continuous"),
    Variant("naf", "naf", {}, "Gu, Lillicrap, Sutskever, Levine 2016, Algorithm 1", "continuous"),
    # The shared Q-learner makes these settings, not code: NAF with van Hasselt et al.'s double target
    # (the target network values the online network's mu(x')), and DDPG on proportional prioritized replay.
    Variant("double_naf", "naf", {"double": True}, "Gu et al. 2016 with van Hasselt et al. 2016's double target",
            "continuous"),
    Variant("per_ddpg", "ddpg", {"sampler": "proportional", "per_alpha": 0.6, "per_beta0": 0.4},
            "Lillicrap et al. 2016 with Schaul et al. 2016's proportional prioritized replay", "continuous"),
    Variant("sampled_q", "sampled_q", {"maximizer": "uniform"}, "Levine, CS 285: max over sampled actions",
            "continuous"),
    Variant("cem_q", "sampled_q", {"maximizer": "cem"}, "Kalashnikov et al. 2018 (QT-Opt's CEM)", "continuous"),
    Variant("naf_imagination", "imagination", {"model": "linear", "ilqg_fraction": 0.0},
            "Gu et al. 2016, Algorithm 2 (imagination rollouts, time-varying linear models)", "continuous"),
    Variant("naf_imagination_ilqg", "imagination", {"model": "linear", "ilqg_fraction": 0.5},
            "Gu et al. 2016, Algorithm 2 with iLQG exploration for half the episodes (p = 0.5)", "continuous"),
    Variant("naf_imagination_nn", "imagination", {"model": "nn", "ilqg_fraction": 0.0},
            "Gu et al. 2016, Fig. 2: imagination rollouts from a neural-network model", "continuous"),
    Variant("q_learning", "tabular", {"method": "q_learning"}, "Watkins & Dayan 1992", "tabular"),
    Variant("fitted_q", "tabular", {"method": "fitted_q"}, "Ernst et al. 2005; Riedmiller 2005", "tabular"),
]
VARIANTS: dict[str, Variant] = {v.name: v for v in _V}


def register(variant: Variant) -> None:
    VARIANTS[variant.name] = variant
