"""The runner: owns environments, the train/eval loop, checkpoints and metric rows (Dopamine's split).

An agent only acts and learns; the interface is algorithms/agent.py's ``Agent``. Every entry ``learn``
returns is logged as a metric. A member the agent marks diverged (non-finite loss or metrics) gets one
``diverged`` row and no rows after it, while the other members train to the end; the run stops as diverged
only when every member has. The runner steps M environments in lockstep, writes each agent step into replay, evaluates
every ``eval_period`` agent steps, and checkpoints everything a resumed run needs: agent, replay,
environments, frame stacks, metric rows. Rows are kept in the checkpoint itself, so a resumed run never
duplicates or drops one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from algorithms.members import derive_seed, torch_generators
from algorithms.registry import VARIANTS
from envs.registry import default_protocol, make_env
from experiments.config import RunConfig, family_module
from experiments.contract import COLUMNS, Row, rows_from_plain, run_id  # noqa: F401 - COLUMNS: re-exported

# 2: member-batched linear weights are kept as [M, in, out] (optimizer state too); format 1 held [M, out, in]
# 3: narrow linear layers (fewer than 16 outputs) keep [M, out, in] again, and so does their optimizer state
# 4: epsilon-greedy acting and uniform replay keep the random numbers they drew but have not read yet
# 5: member-batched linear biases are kept as [M, 1, out] (optimizer state too); state dicts still hold [M, out]
CHECKPOINT_FORMAT = 5


def env_seed(seed: int, stream: str) -> int:
    """A seed ALE and gymnasium accept (< 2^31), from a member's seed and a stream name."""
    return derive_seed(seed, stream) % (2**31 - 1)


class FrameStacker:
    """The last k frames per member; frames before an episode's start are zeros, as in replay."""

    def __init__(self, first: np.ndarray, k: int):
        self.k = k
        self.set_frames(torch.zeros(first.shape[0], k, *first.shape[1:], dtype=torch.as_tensor(first).dtype))
        self.reset_all(first)

    def set_frames(self, frames: torch.Tensor) -> None:
        """Take ``frames`` [M, k, ...] as the stack (a checkpoint's), keeping a view of the newest frame."""
        self.frames = frames
        self._newest = frames[:, -1]

    def reset_all(self, obs: np.ndarray) -> None:
        self.frames.zero_()
        self._newest.copy_(torch.as_tensor(obs))

    def push(self, obs: np.ndarray, new_episode: np.ndarray) -> None:
        if self.k > 1:
            self.set_frames(torch.roll(self.frames, -1, dims=1))
            self.frames[torch.as_tensor(new_episode)] = 0
        self._newest.copy_(torch.as_tensor(obs))

    def obs(self) -> torch.Tensor:
        return self.frames if self.k > 1 else self._newest

    def newest(self) -> torch.Tensor:
        return self._newest


class PendingMetrics:
    """learn()'s outputs since the last log point, in one growable buffer per metric, [capacity, M].

    A list of the outputs would do the same sums, but it keeps thousands of tiny tensors alive between log
    points. Their storage is carved out of the holes that an update's large activations leave in the C heap,
    so the next update's activations no longer fit those holes and the heap grows into fresh, page-faulted
    memory instead (cem_q on Reacher-v5, 1,500 updates, log_period 1,000: 1.27 GB peak and 297k page faults
    with a list, 0.80 GB and 181k when nothing is kept; docs/performance.md). Here one block per metric is
    allocated once, and grows by doubling.

    ``means`` equals ``torch.stack(list_of_outputs).float().mean(0)`` bit for bit: the same values in the same
    contiguous layout, reduced the same way.
    """

    def __init__(self, outputs: list[dict[str, torch.Tensor]] = ()):
        self.buffers: dict[str, torch.Tensor] = {}
        self.n = 0
        for out in outputs:
            self.add(out)

    def add(self, out: dict[str, torch.Tensor]) -> None:
        if self.buffers and out.keys() != self.buffers.keys():
            raise ValueError(f"learn() returned metrics {sorted(out)} after {sorted(self.buffers)}; a run's "
                             "updates must all report the same metrics")
        for name, value in out.items():
            buf = self.buffers.get(name)
            if buf is None or self.n == buf.shape[0]:
                grown = value.new_empty((max(64, 2 * self.n), *value.shape))
                if buf is not None:
                    grown[:self.n] = buf[:self.n]
                self.buffers[name] = buf = grown
            buf[self.n] = value
        self.n += 1

    def means(self) -> dict[str, torch.Tensor]:
        """Per metric, the mean over the outputs since the last clear, [M] (none when there were none)."""
        return {name: buf[:self.n].float().mean(0) for name, buf in self.buffers.items()} if self.n else {}

    def clear(self) -> None:
        self.n = 0

    def as_list(self) -> list[dict[str, torch.Tensor]]:
        """The outputs as learn() returned them (a checkpoint's ``pending``)."""
        return [{name: buf[i].clone() for name, buf in self.buffers.items()} for i in range(self.n)]


@dataclass
class Evaluation:
    """Per-member results of one evaluation phase."""

    returns: list[list[float]] = field(default_factory=list)
    q_estimates: list[list[float]] = field(default_factory=list)
    true_values: list[list[float]] = field(default_factory=list)  # under the learner's episode semantics
    true_values_game: list[list[float]] = field(default_factory=list)  # to game over


def discounted_returns(rewards: list[float], gamma: float, ends: list[bool] | None = None,
                       bootstrap: float = 0.0) -> list[float]:
    """G_t = sum_i gamma^i r_{t+i} for every t, stopping after any step t with ends[t] true (no bootstrap
    there); after the last step the return continues with ``bootstrap`` (a value of the state reached)."""
    out, g = [0.0] * len(rewards), bootstrap
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * (0.0 if ends is not None and ends[t] else g)
        out[t] = g
    return out


class Runner:
    def __init__(self, cfg: RunConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.variant = VARIANTS[cfg.algo]
        self.protocol = cfg.run.protocol or default_protocol(cfg.env)
        self.env = make_env(cfg.env, [env_seed(s, "env") for s in cfg.seeds], "train", self.protocol)
        space = self.env.observation_space
        mod = family_module(self.variant)
        self.frame_stack = self.env.frame_stack
        self.agent = mod.Agent(cfg.algo_config, space.shape, self.frame_stack, self._action_dim(), cfg.seeds,
                               cfg.steps, device)
        self.replay = self.agent.make_replay(space.shape, torch.as_tensor(np.zeros((), space.dtype)).dtype,
                                             self.frame_stack)
        self.run_id = run_id(cfg.algo, cfg.env, cfg.hash())
        self.gamma = cfg.algo_config.gamma
        self.clip = bool(cfg.algo_config.clip_rewards)
        r = cfg.run
        self.eval_period = r.eval_period or max(1, cfg.steps // 10)
        self.checkpoint_period = r.checkpoint_period or self.eval_period
        self.evaluate_enabled = True  # benchmarks time the training loop alone
        self.progress = None  # experiments.progress.Progress, if someone watches
        self.stop = None  # experiments.progress.StopSignals: stop cleanly after the current step

    def _action_dim(self):
        space = self.env.action_space
        return int(space.n) if hasattr(space, "n") else space

    # ---------------------------------------------------------------------------------------- rows
    def _row(self, k: int, step: int, metric: str, value: float, episodes) -> Row:
        c = self.cfg
        return Row(self.run_id, c.run.suite, c.algo, c.env, self.protocol, int(c.seeds[k]), step,
                   step * self.env.frames_per_step, int(episodes[k]), metric, float(value))

    def _rows(self, step: int, metric: str, values, episodes) -> list[Row]:
        """One row per healthy member (a diverged member's last row is its ``diverged`` row)."""
        diverged = self.agent.diverged.tolist()
        return [self._row(k, step, metric, v, episodes) for k, v in enumerate(values) if not diverged[k]]

    def train_reward(self, reward: np.ndarray) -> np.ndarray:
        return np.clip(reward, -1.0, 1.0) if self.clip else reward

    # ---------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, step: int) -> Evaluation:
        """Run the evaluation policy on fresh environments seeded from (member seed, step).

        q_estimate is the mean of max_a Q over the states visited in completed games. true_value is the mean
        discounted return (with the training reward transform) actually obtained from those states under the
        episode semantics the Q-function learns, so the two compare like for like (van Hasselt et al. 2016,
        Fig. 3): under the Atari ``nature`` protocol a lost life ends the return (Step.life_lost), as it ends
        the bootstrapped target in training; game over ends it; a time-limit truncation bootstraps from the
        agent's own max_a Q of the final observation, as the learner's target does (the one term that is an
        estimate, discounted by gamma^k at k steps before the cut). true_value_game sums to game over (life
        losses ignored, truncation cut off), the number a game-over reading would report.
        """
        c = self.cfg
        env = make_env(c.env, [env_seed(s, f"eval/{step}") for s in c.seeds], "eval", self.protocol)
        gens = torch_generators(c.seeds, f"eval-act/{step}")
        M = len(c.seeds)
        dead = self.agent.diverged.tolist()
        stacker = FrameStacker(env.reset(), self.frame_stack)
        ev = Evaluation(*([[] for _ in range(M)] for _ in range(4)))
        ep_q: list[list[float]] = [[] for _ in range(M)]
        ep_r: list[list[float]] = [[] for _ in range(M)]
        ep_life: list[list[bool]] = [[] for _ in range(M)]
        for _ in range(c.run.eval_max_steps):
            obs = stacker.obs()
            q = self.agent.value_estimate(obs.unsqueeze(1))[:, 0].cpu().numpy()
            actions = self.agent.act_eval(obs, gens)
            res = env.step(self._stand_in(actions, dead))
            rewards = self.train_reward(res.reward)
            life_lost = res.life_lost if res.life_lost is not None else np.zeros(M, dtype=bool)
            for k in range(M):
                ep_q[k].append(float(q[k]))
                ep_r[k].append(float(rewards[k]))
                ep_life[k].append(bool(life_lost[k]))
            final_value = self._final_values(stacker, res) if res.truncated.any() else None
            for k, ret, _length in res.finished:
                if len(ev.returns[k]) < c.run.eval_episodes:
                    ev.returns[k].append(ret)
                    ev.q_estimates[k] += ep_q[k]
                    cut = bool(res.truncated[k]) and not bool(res.terminated[k])
                    bootstrap = float(final_value[k]) if cut else 0.0
                    ev.true_values[k] += discounted_returns(ep_r[k], self.gamma, ep_life[k], bootstrap)
                    ev.true_values_game[k] += discounted_returns(ep_r[k], self.gamma)
                ep_q[k], ep_r[k], ep_life[k] = [], [], []
            ended = res.episode_end
            for k in np.flatnonzero(ended):
                if not any(f[0] == k for f in res.finished):  # an episode end that is not a game end
                    ep_q[k], ep_r[k], ep_life[k] = [], [], []
            stacker.push(res.obs, ended)
            if all(len(r) >= c.run.eval_episodes for r in ev.returns):
                break
        env.close()
        return ev

    def _final_values(self, stacker: FrameStacker, res) -> np.ndarray:
        """max_a Q of each member's final observation stacked onto its current frames (for truncations)."""
        if self.frame_stack > 1:
            frames = torch.cat([stacker.frames[:, 1:], torch.as_tensor(res.final_obs).unsqueeze(1)], dim=1)
        else:
            frames = torch.as_tensor(res.final_obs)
        return self.agent.value_estimate(frames.unsqueeze(1))[:, 0].cpu().numpy()

    def _stand_in(self, actions: np.ndarray, dead: list[bool]) -> np.ndarray:
        """The actions the environments get: a diverged member's continuous action (its frozen parameters are
        not finite, so neither is its policy's output) replaced by the point of the action box nearest 0. Its
        environment keeps stepping in lockstep with the others and nothing of it is logged any more; a NaN
        action would only make the simulator warn and reset on every step."""
        if actions.dtype.kind != "f" or not any(dead):
            return actions
        space = self.env.action_space
        held = actions.copy()
        held[np.asarray(dead)] = np.clip(np.zeros(space.shape, held.dtype), space.low, space.high)
        return held

    # ---------------------------------------------------------------------------------------- loop
    def train(self, state: dict | None) -> Iterator[tuple[str, dict]]:
        """Yield ("checkpoint", state) at checkpoints and ("done", state) at the end (or on divergence)."""
        c, M = self.cfg, len(self.cfg.seeds)
        if state is None:
            step, rows, episodes = 0, [], np.zeros(M, dtype=np.int64)
            stacker = FrameStacker(self.env.reset(), self.frame_stack)
            restored_env = True
        else:
            step, rows, episodes = state["step"], rows_from_plain(state["rows"]), np.asarray(state["episodes"])
            self.agent.load_state_dict(state["agent"])
            if state.get("replay") is not None:
                self.replay.load_state_dict(state["replay"])
            restored_env = self._restore_env(state, step)
            stacker = FrameStacker(self.env.reset() if not restored_env else np.zeros(
                (M, *self.env.observation_space.shape), self.env.observation_space.dtype), self.frame_stack)
            if restored_env:
                stacker.set_frames(state["stacker"].clone())
            else:
                self.replay.cut_episodes()
        dead = self.agent.diverged.tolist()  # members whose learning diverged, as the agent last reported
        t0, steps_at_t0 = time.perf_counter(), step
        # learn() outputs since the last log point; checkpointed so a resumed run logs the same means
        losses = PendingMetrics(state.get("pending", []) if state else [])
        status = "complete"
        while step < c.steps:
            obs = stacker.obs()
            actions = self.agent.act(obs, step)
            res = self.env.step(self._stand_in(actions, dead))
            self.replay.add(stacker.newest(), actions, self.train_reward(res.reward), res.terminated, res.truncated,
                            res.final_obs)
            self.agent.observe(stacker.obs(), actions, res.reward, res.terminated, res.truncated, res.final_obs)
            ended = res.episode_end
            if ended.any():
                self.agent.end_episodes(ended)
            stacker.push(res.obs, ended)
            step += 1
            for k, ret, _length in res.finished:
                episodes[k] += 1
                if not dead[k]:
                    rows.append(self._row(k, step, "train_return", ret, episodes))
            out = self.agent.learn(self.replay, step)
            if out is not None:
                if self.agent.n_diverged != sum(dead):  # a Python count: no tensor work on the common path
                    now = self.agent.diverged.tolist()
                    rows += [self._row(k, step, "diverged", 1.0, episodes) for k in range(M) if now[k] and not dead[k]]
                    dead = now
                    if all(dead):
                        status = "diverged"
                        yield "done", self._state(step, rows, episodes, stacker, status)
                        return
                losses.add(out)
            if step % c.run.log_period == 0:
                now = time.perf_counter()
                sps = (step - steps_at_t0) / max(now - t0, 1e-9)
                t0, steps_at_t0 = now, step
                rows += self._rows(step, "steps_per_second", [sps] * M, episodes)
                for metric, mean in losses.means().items():
                    rows += self._rows(step, metric, mean.tolist(), episodes)
                losses.clear()
            if self.evaluate_enabled and (step % self.eval_period == 0 or step == c.steps):
                ev = self.evaluate(step)
                for metric, values in (("eval_return", ev.returns), ("q_estimate", ev.q_estimates),
                                       ("true_value", ev.true_values), ("true_value_game", ev.true_values_game)):
                    means = [float(np.mean(v)) if v else math.nan for v in values]
                    rows += [r for r in self._rows(step, metric, means, episodes) if not math.isnan(r[-1])]
                    if metric == "eval_return" and self.progress is not None:
                        self.progress.evaluation(means)
                t0 = time.perf_counter()  # evaluation time is not training throughput
            if self.progress is not None:
                self.progress.update(step)
            if self.stop is not None and self.stop.received is not None and step < c.steps:
                yield "interrupted", self._state(step, rows, episodes, stacker, "interrupted", pending=losses.as_list())
                return
            if step % self.checkpoint_period == 0 and step < c.steps:
                yield "checkpoint", self._state(step, rows, episodes, stacker, "running", pending=losses.as_list())
        yield "done", self._state(step, rows, episodes, stacker, status)

    def _state(self, step, rows, episodes, stacker, status, **extra) -> dict:
        env_state = None
        try:
            env_state = self.env.state_dict()
        except NotImplementedError:
            pass
        extra.setdefault("diverged_seeds", [int(s) for s, d in zip(self.cfg.seeds, self.agent.diverged.tolist(),
                                                                    strict=True) if d])
        return {"format": CHECKPOINT_FORMAT, "config_hash": self.cfg.hash(), "step": step,
                "rows": [tuple(r) for r in rows],  # plain tuples: checkpoints load with weights_only=True
                "episodes": torch.as_tensor(episodes), "agent": self.agent.state_dict(),
                "replay": self.replay.state_dict() if self.cfg.run.checkpoint_replay else None,
                "env": env_state, "stacker": stacker.frames.clone(), "status": status, **extra}

    def _restore_env(self, state: dict, step: int) -> bool:
        """Put the training environments back where the checkpoint left them; False if they could not be."""
        if state.get("env") is None:
            self.env.close()
            self.env = make_env(self.cfg.env, [env_seed(s, f"env/resume/{step}") for s in self.cfg.seeds],
                                "train", self.protocol)
            return False
        self.env.reset()
        self.env.load_state_dict(state["env"])
        return True

