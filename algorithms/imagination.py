"""Imagination rollouts: NAF accelerated with learned models (Gu et al. 2016, Sec. 5, Algorithm 2).

NAF (naf.py) with these additions, each a flag:
- every ``refit_episodes`` = n real episodes, dynamics models are fitted to the latest episodes: time-varying
  linear-Gaussian models from those n episodes with a prior fitted on the last ``prior_episodes``
  (``model=linear``, dynamics.py), or a neural-network model (``model=nn``, the ablation of Fig. 2);
- every m = ``batch_size`` real steps, m start states (x_t, t) are drawn from the n episodes of the latest
  fit (Algorithm 2's B_old) and rolled out for ``rollout_length`` = l steps with the current policy
  mu(x) + Gaussian noise; the imagined transitions go to their own buffer R_f, never to the real replay;
- each minibatch draws ``imagined_fraction`` of its transitions from R_f, the rest from the real replay;
  after ``switch_off_episode`` real episodes, rollouts stop and minibatches are real only;
- with probability ``ilqg_fraction`` an episode is acted by one iLQG step on the fitted linear models and a
  quadratic reward model (explore.py) instead of mu(x) + noise (Algorithm 2's pi_iLQG, chosen w.p. 1 - p).

Choices of ours, where the paper's text does not fix them: rewards of imagined transitions come from a
quadratic model r(x, u) fitted by least squares to the last ``prior_episodes`` episodes (the reward of a
gymnasium task is not a known function of its observation); next states are drawn from the fitted Gaussian
N(F_t [x; u] + f_t, Sigma_t) (the neural model is deterministic); rollouts stop at the horizon T; imagined
transitions bootstrap (a fixed horizon has no terminal states). Time-indexed models need every episode to
have the same length, so these variants run only on fixed-horizon tasks (``check_env``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from algorithms.continuous import RENAMED, ContinuousAgent  # noqa: F401 - RENAMED: config.build
from algorithms.dynamics import LinearGaussianDynamics, NNDynamics, fit_linear_gaussian_dynamics
from algorithms.explore import ILQGController, QuadraticReward, fit_quadratic_reward, ilqg_step
from algorithms.members import derive_seed, member_rand, member_randn, torch_generators
from algorithms.naf import NAFAgent, NAFConfig
from algorithms.naf import validate as validate_naf
from algorithms.replay import Batch, ReplayBuffer, TransitionReplay

MODELS = ("linear", "nn")


@dataclass
class ImaginationConfig(NAFConfig):
    """NAF's settings plus Algorithm 2's."""

    model: str = "linear"
    """Dynamics model of the rollouts: linear (time-varying linear-Gaussian models, Gu et al. 2016, Sec. 5)
    or nn (a neural-network model, the ablation of Gu et al. 2016, Fig. 2)."""
    rollout_length: int = 10
    """l, imagined steps from each start state: 10 on the reacher, 5 on the gripper (Gu et al. 2016, Appendix)."""
    refit_episodes: int = 5
    """n: the models are refit every n real episodes, the linear ones from those n episodes (Gu et al. 2016,
    Algorithm 2)."""
    prior_episodes: int = 20
    """Episodes the linear models' prior, the reward model and the neural model are fitted on (the GPS prior's
    20 trajectories, see dynamics.fit_linear_gaussian_dynamics)."""
    imagined_fraction: float = 0.5
    """Share of each minibatch drawn from the imagined buffer while imagination is on (ours). Gu et al. 2016
    (Algorithm 2) add I*l imagined minibatches to the I real ones per step instead; updates_per_step = I(l+1)
    with imagined_fraction = l/(l+1) uses the same amounts of real and imagined data."""
    imagined_replay_size: int = 50_000
    """Capacity of the imagined buffer R_f in transitions per member (ours: about 20 refits' worth of rollouts
    on 50-step episodes, so old models' data ages out)."""
    switch_off_episode: int = 0
    """Real episodes after which rollouts stop and minibatches are real only; 0 = never. Gu et al. 2016 find
    the gain of imagination early in training; the switch-off point is ours to set."""
    ilqg_fraction: float = 0.0
    """Share of real episodes acted by one iLQG step on the fitted linear models (Gu et al. 2016, Algorithm 2:
    1 - p; Appendix Table 2 reports 0.5)."""
    ilqg_cov_scale: float = 1.0
    """c: the iLQG policy samples N(K_t x + k_t, c Q_uu^-1) (Gu et al. 2016, Algorithm 2's pi_iLQG); 1 (ours)
    is the maximum-entropy covariance of guided policy search."""
    nn_hidden: list[int] = field(default_factory=lambda: [200, 200])
    """Hidden widths of the neural model (ours: the size of the NAF network, Gu et al. 2016, Sec. 6)."""
    nn_epochs: int = 20
    """Training epochs of the neural model per refit, warm-started from the previous fit (ours)."""


PRESETS: dict[str, dict] = {}


def validate(cfg: ImaginationConfig) -> list[str]:
    """Problems with a config, each naming the key and the valid choices (empty when fine)."""
    errors = validate_naf(cfg)
    if cfg.model not in MODELS:
        errors.append(f"model={cfg.model!r}: valid: {', '.join(MODELS)}")
    for key in ("rollout_length", "refit_episodes", "nn_epochs", "ilqg_cov_scale"):
        if getattr(cfg, key) <= 0:
            errors.append(f"{key}={getattr(cfg, key)}: must be > 0")
    if cfg.prior_episodes < cfg.refit_episodes:
        errors.append(f"prior_episodes={cfg.prior_episodes}: must be >= refit_episodes={cfg.refit_episodes}")
    for key in ("imagined_fraction", "ilqg_fraction"):
        if not 0 <= getattr(cfg, key) <= 1:
            errors.append(f"{key}={getattr(cfg, key)}: must be in [0, 1]")
    if cfg.ilqg_fraction > 0 and cfg.model != "linear":
        errors.append(f"ilqg_fraction={cfg.ilqg_fraction}: iLQG needs model=linear (the time-varying linear models)")
    if cfg.switch_off_episode < 0:
        errors.append(f"switch_off_episode={cfg.switch_off_episode}: must be >= 0 (0 = never)")
    if cfg.imagined_replay_size < cfg.batch_size * cfg.rollout_length:
        errors.append(f"imagined_replay_size={cfg.imagined_replay_size}: must hold one round of rollouts, "
                      f"batch_size * rollout_length = {cfg.batch_size * cfg.rollout_length}")
    if not cfg.nn_hidden or min(cfg.nn_hidden) <= 0:
        errors.append(f"nn_hidden={cfg.nn_hidden}: give at least one layer width, all > 0")
    return errors


def check_env(cfg: ImaginationConfig, env_id: str) -> list[str]:
    """Time-indexed models and start states need episodes of one fixed length."""
    from envs.registry import fixed_horizon_envs

    if env_id in fixed_horizon_envs():
        return []
    return [f"env {env_id}: imagination rollouts need fixed-horizon episodes (no early termination); "
            f"valid: {', '.join(fixed_horizon_envs())}"]


def _sqrt_factor(sigma: torch.Tensor) -> torch.Tensor:
    """S with S S^T = Sigma for each [.., d, d] PSD matrix; fitted covariances of nearly deterministic dynamics
    can have tiny negative eigenvalues, where a Cholesky factorization would fail."""
    w, v = torch.linalg.eigh(sigma)
    return v * w.clamp(min=0).sqrt().unsqueeze(-2)


# ---------------------------------------------------------------------------------------------------------
# The agent
# ---------------------------------------------------------------------------------------------------------


class ImaginationAgent(ContinuousAgent):
    """NAF's head and Q-learning plus Algorithm 2: records real episodes through ``observe``, refits models,
    imagines into a TransitionReplay (replay.py), mixes minibatches.

    Episodes of a fixed-horizon task end together for every member, so the episode record is one tensor per
    episode with the member dimension first; each member's models are fitted to its own episodes only.
    """

    make_head = NAFAgent.make_head

    def __init__(self, cfg: ImaginationConfig, obs_shape, frame_stack, action_space, seeds, total_steps,
                 device="cpu"):
        super().__init__(cfg, obs_shape, frame_stack, action_space, seeds, total_steps, device)
        for stream in ("imagine", "ilqg", "model"):
            self.streams[stream] = torch_generators(seeds, stream)
        self.imagined = TransitionReplay(self.M, cfg.imagined_replay_size, self.obs_dim, self.action_dim, cfg.gamma,
                                         torch_generators(seeds, "imagined-replay"))
        self.horizon: int | None = None  # T, known after the first episode
        self.episodes: list[dict[str, torch.Tensor]] = []  # the last prior_episodes episodes, oldest first
        self.fitted_episodes: list[dict[str, torch.Tensor]] = []  # B_old: the n episodes of the latest fit
        self.episodes_done = 0
        self.current: dict[str, list[torch.Tensor]] = {"obs": [], "action": [], "reward": []}
        self.real_steps = 0
        self.dynamics: list[LinearGaussianDynamics | NNDynamics] = []
        self.noise_factor: list[torch.Tensor] = []  # sqrt of Sigma_t per member (linear models)
        self.reward_model: list[QuadraticReward] = []
        self.controller: list[ILQGController] = []
        self.ilqg_episode = torch.zeros(self.M, dtype=torch.bool)
        if cfg.model == "nn":
            self.dynamics = [self._new_nn(s) for s in seeds]

    def _new_nn(self, seed: int) -> NNDynamics:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "init/model"))
            return NNDynamics(self.obs_dim, self.action_dim, self.cfg.nn_hidden).to(self.device)

    # ------------------------------------------------------------------------------------------ schedule
    def fitted(self) -> bool:
        return bool(self.reward_model)

    def imagining(self) -> bool:
        """Rollouts run and minibatches mix once models exist, until the switch-off episode."""
        off = self.cfg.switch_off_episode
        return self.fitted() and (off == 0 or self.episodes_done < off)

    # ------------------------------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor, step: int) -> np.ndarray:
        """mu(x) + N_t (uniform before learning starts), or, in the episodes drawn for it, the iLQG policy plus
        the same exploration noise N_t (Gu et al. 2016, Algorithm 2: u_t = pi(x_t) + N_t for either policy)."""
        actions = super().act(obs, step)
        t = len(self.current["obs"])
        noise = self.explorer.last_noise
        for k in torch.nonzero(self.ilqg_episode).flatten().tolist():
            x = obs[k].to(self.device, torch.float32)
            u = self.controller[k].sample(t, x, self.streams["ilqg"][k], self.cfg.ilqg_cov_scale).cpu()
            if noise is not None:
                u = u + self.half_range * noise[k]
            actions[k] = self.clip(u).numpy()
        return actions

    # ------------------------------------------------------------------------------------------ recording
    def observe(self, obs, action, reward, terminated, truncated, final_obs) -> None:
        """Record the real step; at an episode end maybe refit; every batch_size steps, imagine."""
        if np.any(terminated):
            raise RuntimeError("imagination rollouts need fixed-horizon episodes, but an episode terminated "
                               "early; use a fixed-horizon task such as Reacher-fixedH-v5")
        self.current["obs"].append(torch.as_tensor(obs, dtype=torch.float32).cpu())
        self.current["action"].append(torch.as_tensor(action, dtype=torch.float32))
        self.current["reward"].append(torch.as_tensor(reward, dtype=torch.float32))
        self.real_steps += 1
        if np.any(truncated):
            if not np.all(truncated):
                raise RuntimeError("imagination rollouts need every member's episodes to have the same length")
            self._end_episode(torch.as_tensor(final_obs, dtype=torch.float32))
        if self.imagining() and self.real_steps % self.cfg.batch_size == 0:
            self.imagine()

    def _end_episode(self, final_obs: torch.Tensor) -> None:
        c = self.cfg
        episode = {"X": torch.stack([*self.current["obs"], final_obs], dim=1),  # [M, T+1, dx]
                   "U": torch.stack(self.current["action"], dim=1), "R": torch.stack(self.current["reward"], dim=1)}
        length = episode["U"].shape[1]
        if self.horizon is None:
            self.horizon = length
        elif length != self.horizon:
            raise RuntimeError(f"imagination rollouts need a fixed horizon: an episode of {length} steps "
                               f"followed ones of {self.horizon}")
        self.current = {"obs": [], "action": [], "reward": []}
        self.episodes = [*self.episodes, episode][-c.prior_episodes:]
        self.episodes_done += 1
        if self.episodes_done % c.refit_episodes == 0:
            self.refit()
        # Algorithm 2: each episode follows pi_iLQG with probability 1 - p (drawn even before a controller
        # exists, so a member's stream does not depend on when its models were first fitted)
        draw = member_rand(self.streams["ilqg"], (1,), "cpu")[:, 0]
        self.ilqg_episode = (draw < c.ilqg_fraction) & torch.tensor(bool(self.controller))

    # ------------------------------------------------------------------------------------------ models
    def _history(self, k: int, last: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        eps = self.episodes[-last:]
        return tuple(torch.stack([e[key][k] for e in eps]).to(self.device) for key in ("X", "U", "R"))

    def refit(self) -> None:
        """Fit every member's reward model, dynamics and (if used) iLQG controller to its own episodes."""
        c = self.cfg
        self.fitted_episodes = self.episodes[-c.refit_episodes:]
        self.reward_model, self.controller = [], []
        if c.model == "linear":
            self.dynamics, self.noise_factor = [], []
        for k in range(self.M):
            X, U, R = self._history(k, c.prior_episodes)
            self.reward_model.append(fit_quadratic_reward(X[:, :-1].reshape(-1, self.obs_dim),
                                                          U.reshape(-1, self.action_dim), R.reshape(-1)))
            if c.model == "nn":
                self.dynamics[k].fit(X, U, c.nn_epochs, self.streams["model"][k])
                continue
            model = fit_linear_gaussian_dynamics(X, U, n_fit=c.refit_episodes, n_prior=c.prior_episodes)
            self.dynamics.append(model)
            self.noise_factor.append(_sqrt_factor(model.Sigma))
            if c.ilqg_fraction > 0:
                # iLQG.OneStep(B_f, M): around the mean of the episodes the models were fitted to
                Xn, Un = X[-c.refit_episodes:], U[-c.refit_episodes:]
                self.controller.append(ilqg_step(model, self.reward_model[k], Xn[:, 0].mean(0), Xn.mean(0),
                                                 Un.mean(0)))

    # ------------------------------------------------------------------------------------------ imagining
    @torch.no_grad()
    def imagine(self) -> None:
        """batch_size rollouts of rollout_length steps per member into the imagined buffer."""
        for k, rows in enumerate(self.rollouts()):
            self.imagined.add(k, *rows)

    @torch.no_grad()
    def rollouts(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Each member's imagined transitions (x, u, r, x') from batch_size start states (x_t, t) drawn from the
        episodes of its latest fit (Algorithm 2's B_old), each followed for up to rollout_length steps or to the
        horizon. The policy runs for every member at once; each member's models and random numbers are its own."""
        c, gens, T, dev = self.cfg, self.streams["imagine"], self.horizon, self.device
        starts, times = [], []
        for k, gen in enumerate(gens):
            X = torch.stack([e["X"][k] for e in self.fitted_episodes])
            pick = (torch.rand(c.batch_size, 2, generator=gen) * torch.tensor([X.shape[0], T])).long()
            starts.append(X[pick[:, 0], pick[:, 1]])
            times.append(pick[:, 1])
        x, t = torch.stack(starts).to(dev), torch.stack(times).to(dev)  # [M, B, dx], [M, B]
        low, high = self.low.to(dev), self.high.to(dev)
        sigma = c.noise_sigma * self.half_range.to(dev)
        out: list[list[list[torch.Tensor]]] = [[[], [], [], []] for _ in range(self.M)]
        for _ in range(c.rollout_length):
            alive = t < T
            if not alive.any():
                break
            noise = member_randn(gens, (c.batch_size, self.action_dim), dev)
            u = torch.clamp(self.head.greedy(x) + sigma * noise, low, high)
            x_next = torch.empty_like(x)
            for k in range(self.M):
                tk = t[k].clamp(max=T - 1)  # rows past the horizon are computed but never kept
                x_next[k] = self.dynamics[k].predict(tk, x[k], u[k])
                if c.model == "linear":
                    eps = torch.randn(c.batch_size, self.obs_dim, generator=gens[k]).to(dev)
                    x_next[k] += (self.noise_factor[k][tk] @ eps.unsqueeze(-1)).squeeze(-1)
                keep = alive[k]
                for rows, value in zip(out[k], (x[k], u[k], self.reward_model[k](x[k], u[k]), x_next[k]),
                                       strict=True):
                    rows.append(value[keep])
            x, t = x_next, t + 1
        return [tuple(torch.cat(rows) for rows in member) for member in out]

    # ------------------------------------------------------------------------------------------ learning
    def sample_batch(self, replay: ReplayBuffer, step: int) -> Batch:
        """A minibatch with imagined_fraction of its rows from the imagined buffer while imagining."""
        n_imagined = round(self.cfg.imagined_fraction * self.cfg.batch_size)
        if not self.imagining() or n_imagined == 0 or bool((self.imagined.size() == 0).any()):
            return super().sample_batch(replay, step)
        imagined = self.imagined.sample(n_imagined)
        if n_imagined == self.cfg.batch_size:
            return imagined
        real = replay.sample(self.cfg.batch_size - n_imagined)
        mixed = {key: torch.cat([getattr(part, key).to(self.device, torch.float32) for part in (real, imagined)], 1)
                 for key in ("obs", "action", "reward", "discount", "next_obs", "weight")}
        return Batch(**mixed, index=None)  # no priorities to update: the samplers are uniform

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        state = super().state_dict()
        nn_models = self.cfg.model == "nn"
        state["imagination"] = {
            "imagined": self.imagined.state_dict(), "horizon": self.horizon, "episodes": self.episodes,
            "episodes_done": self.episodes_done, "current": self.current, "real_steps": self.real_steps,
            "fitted_episodes": self.fitted_episodes,
            "dynamics": [m.state_dict() if nn_models else dataclasses.asdict(m) for m in self.dynamics],
            "noise_factor": self.noise_factor, "reward_model": [dataclasses.asdict(r) for r in self.reward_model],
            "controller": [dataclasses.asdict(ctl) for ctl in self.controller], "ilqg_episode": self.ilqg_episode}
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        s = state["imagination"]
        self.imagined.load_state_dict(s["imagined"])
        self.horizon, self.episodes, self.episodes_done = s["horizon"], list(s["episodes"]), int(s["episodes_done"])
        self.current = {key: list(v) for key, v in s["current"].items()}
        self.real_steps = int(s["real_steps"])
        self.fitted_episodes = list(s["fitted_episodes"])
        if self.cfg.model == "nn":
            for model, weights in zip(self.dynamics, s["dynamics"], strict=True):
                model.load_state_dict(weights)
        else:
            self.dynamics = [LinearGaussianDynamics(**d) for d in s["dynamics"]]
        self.noise_factor = list(s["noise_factor"])
        self.reward_model = [QuadraticReward(**d) for d in s["reward_model"]]
        self.controller = [ILQGController(**d) for d in s["controller"]]
        self.ilqg_episode = s["ilqg_episode"].clone()


Config = ImaginationConfig
Agent = ImaginationAgent
