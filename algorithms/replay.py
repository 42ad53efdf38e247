"""Experience replay for M members: uniform or prioritized sampling, n-step returns, frames stored once.

One buffer holds the transitions of all M members in tensors shaped [M, N, ...]; member k only ever reads
and writes row k, and draws from its own generator. Parts, in Dopamine's spirit:

- storage: each row is one agent step: the newest frame of the observation acted on, the action, the
  (already clipped, if the learner clips) reward, and flags. Frame stacks are rebuilt at sample time from
  consecutive rows, so an Atari frame is stored once, not four times (Mnih et al. 2015 stored them the same
  way). When an episode ends, one extra row holds its final observation (never sampled as a start), so a
  truncated episode can bootstrap from it.
- accumulator: n-step returns are computed at sample time from consecutive rows: the sum of discounted
  rewards stops at the first episode end; termination cuts the bootstrap, truncation keeps it
  (Sutton & Barto 2018, Sec. 7.1; Hessel et al. 2018).
- sampler: ``uniform`` (Mnih et al. 2015) or prioritized (Schaul et al. 2016), ``proportional``
  (p_i = |delta_i| + eps) or ``rank`` (p_i = 1 / rank(i)); both draw i with probability p_i^alpha / sum p^alpha
  from a sum tree and return importance weights (N P(i))^-beta normalised by the batch maximum. A new
  transition enters with the largest priority seen so far and sinks to the rank of its |delta| once replayed.
  Ranks are exact when sampled: any priority change since the last sort triggers a re-sort before the next
  draw. Schaul et al. (2016, Sec. 3.3 and Appendix B.2.1) approximate the order with a binary heap that is
  re-sorted only infrequently, to save time; the periodic re-sort this replaces let rows added since the last
  sort keep the weight of rank 1 and replayed rows their old weight, so sampling followed stale ranks
  (issue 9). The price
  is one stable argsort of the N rows per sampled minibatch, O(N log N): measured on one CPU core, 11 ms for
  N = 10^5 and 130 ms for N = 10^6 per member (not yet measured on a GPU); only the rank sampler pays it.

A transition t may be sampled once its n-step bootstrap row has been written and while none of the rows its
frame stack reads have been overwritten.

On the CPU, the uniform sampler's hot paths (add, drawing indices, gathering a one-step batch of single
frames) index numpy views of the same storage: one numpy indexing costs about a microsecond where torch's
costs several, and replay was a fifth of a CartPole DQN step (docs/performance.md). Both paths give the same
rows from the same random numbers (tests/test_replay.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from algorithms.members import UniformBlocks, member_rand

SAMPLERS = ("uniform", "proportional", "rank")


@dataclass
class Batch:
    """A minibatch for every member: tensors shaped [M, B, ...]."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor  # n-step discounted sum of rewards
    discount: torch.Tensor  # gamma^m for a bootstrap m steps ahead, 0 where the episode terminated
    next_obs: torch.Tensor
    index: torch.Tensor  # logical row indices, to update priorities
    weight: torch.Tensor  # importance-sampling weights (ones for uniform sampling)


class SumTree:
    """One sum tree per member over N leaves (float64, so a million leaves keep their precision)."""

    def __init__(self, members: int, capacity: int, device: torch.device | str = "cpu"):
        self.leaves = 1 << max(0, int(capacity - 1).bit_length())
        self.depth = self.leaves.bit_length() - 1
        self.nodes = torch.zeros(members, 2 * self.leaves, dtype=torch.float64, device=device)

    def total(self) -> torch.Tensor:
        return self.nodes[:, 1]

    def get(self, member: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
        return self.nodes[member, self.leaves + leaf]

    def set(self, member: torch.Tensor, leaf: torch.Tensor, value: torch.Tensor) -> None:
        """Set leaves (member[i], leaf[i]) to value[i] and refresh their ancestors."""
        node = leaf + self.leaves
        self.nodes[member, node] = value.to(torch.float64)
        for _ in range(self.depth):
            node = node // 2
            self.nodes[member, node] = self.nodes[member, 2 * node] + self.nodes[member, 2 * node + 1]

    def find(self, target: torch.Tensor) -> torch.Tensor:
        """Leaves whose cumulative-sum interval holds target [M, B] (one tree per row of target)."""
        m = torch.arange(target.shape[0], device=target.device).unsqueeze(1).expand_as(target)
        node = torch.ones_like(target, dtype=torch.long)
        target = target.clone()
        for _ in range(self.depth):
            left = self.nodes[m, 2 * node]
            right = self.nodes[m, 2 * node + 1]
            go_right = (target >= left) & (right > 0)
            target = torch.where(go_right, target - left, target)
            node = 2 * node + go_right.long()
        return node - self.leaves


class ReplayBuffer:
    """Replay for M members with a pluggable sampler (see module docstring).

    Args:
      members: M.
      capacity: N rows per member (agent steps, plus one row per episode end).
      frame_shape / frame_dtype: one stored frame (a state vector for non-pixel environments).
      action_shape / action_dtype: () and int64 for discrete actions; (du,) and float32 for continuous.
      frame_stack: consecutive frames making one observation (4 for Atari, Mnih et al. 2015).
      n_step, gamma: the n-step return (n = 1 is one-step Q-learning).
      sampler: "uniform", "proportional" or "rank".
      alpha: prioritization exponent (Schaul et al. 2016: 0.6 proportional, 0.7 rank).
      priority_eps: added to |delta| so no transition has probability 0 (Schaul et al. 2016).
      generators: one torch.Generator per member (sampling stream).
    """

    def __init__(self, members: int, capacity: int, frame_shape: Sequence[int], frame_dtype: torch.dtype,
                 action_shape: Sequence[int] = (), action_dtype: torch.dtype = torch.int64,
                 frame_stack: int = 1, n_step: int = 1, gamma: float = 0.99, sampler: str = "uniform",
                 alpha: float = 0.6, priority_eps: float = 1e-6,
                 generators: Sequence[torch.Generator] | None = None, device: torch.device | str = "cpu"):
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown replay sampler {sampler!r}; valid: {', '.join(SAMPLERS)}")
        if capacity < frame_stack + n_step + 1:
            raise ValueError(f"replay capacity {capacity} must exceed frame_stack + n_step ({frame_stack + n_step})")
        self.M, self.N = members, capacity
        self.frame_stack, self.n_step, self.gamma = frame_stack, n_step, gamma
        self.sampler, self.alpha, self.priority_eps = sampler, alpha, priority_eps
        self.device = torch.device(device)
        self.generators = list(generators) if generators is not None else [torch.Generator() for _ in range(members)]
        dev = self.device
        self.frames = torch.zeros(members, capacity, *frame_shape, dtype=frame_dtype, device=dev)
        action_dtype = torch.int32 if action_dtype == torch.int64 else action_dtype  # halves the bytes; <2^31 actions
        self.actions = torch.zeros(members, capacity, *action_shape, dtype=action_dtype, device=dev)
        self.rewards = torch.zeros(members, capacity, dtype=torch.float32, device=dev)
        # flags: bit 0 terminal, bit 1 episode end, bit 2 valid (row has an action), bit 3 episode start
        self.flags = torch.zeros(members, capacity, dtype=torch.uint8, device=dev)
        self.added = torch.zeros(members, dtype=torch.long, device=dev)  # rows ever written, per member
        self._members_column = torch.arange(members, device=dev).unsqueeze(1)
        self._next_start = torch.ones(members, dtype=torch.bool, device=dev)
        # numpy views of the storage (module docstring); load_state_dict copies in place, so they stay valid
        self._np = SimpleNamespace(
            frames=self.frames.numpy(), actions=self.actions.numpy(), rewards=self.rewards.numpy(),
            flags=self.flags.numpy(), added=self.added.numpy(), next_start=self._next_start.numpy(),
            members=np.arange(members), members_column=np.arange(members)[:, None],
            # the first row of each member in the storage flattened over (member, row): fancy indexing with one
            # flat index (np.take) costs a third of indexing with a member column and a row index
            row0=np.arange(members)[:, None] * capacity,
        ) if dev.type == "cpu" and sampler == "uniform" and frame_dtype != torch.bfloat16 else None
        # the numpy path's uniform draws, read from blocks (members.UniformBlocks: the same numbers)
        self._uniforms = UniformBlocks(self.generators) if self._np is not None else None
        if sampler != "uniform":
            self.tree = SumTree(members, capacity, dev)
            # the priority before the exponent: |delta| + eps (proportional) or |delta| to rank (rank)
            self.raw = torch.zeros(members, capacity, dtype=torch.float32, device=dev)
            self.max_raw = torch.ones(members, dtype=torch.float32, device=dev)
            self.ranked = True  # rank sampler: the tree holds the ranks of the current priorities

    # ----------------------------------------------------------------------------------------- writing
    def _window(self, added: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inclusive logical range [lo, hi] of rows that may be sampled once `added` rows exist."""
        lo = (added - self.N + self.frame_stack - 1).clamp(min=0)
        hi = added - 1 - self.n_step
        return lo, hi

    def add(self, frame, action, reward, terminated, truncated, final_frame) -> None:
        """Append one agent step for every member ([M, ...] each: tensors or numpy arrays).

        frame is the newest frame of the observation the action was taken in; where the episode ended
        (terminated or truncated), final_frame is its last observation and is stored in an extra row.
        """
        if self._np is not None:
            self._add_numpy(frame, action, reward, terminated, truncated, final_frame)
            return
        frame, action, reward, terminated, truncated, final_frame = (
            torch.as_tensor(x) for x in (frame, action, reward, terminated, truncated, final_frame))
        dev = self.device
        terminated = terminated.to(dev, torch.bool)
        end = terminated | truncated.to(dev, torch.bool)
        old_lo, old_hi = self._window(self.added)
        members = torch.arange(self.M, device=dev)
        pos = self.added % self.N
        self.frames[members, pos] = frame.to(dev, self.frames.dtype)
        self.actions[members, pos] = action.to(dev, self.actions.dtype)
        self.rewards[members, pos] = reward.to(dev, torch.float32)
        self.flags[members, pos] = (terminated.to(torch.uint8) | (end.to(torch.uint8) << 1) | 4
                                    | (self._next_start.to(torch.uint8) << 3))
        self.added += 1
        if end.any():
            ended = members[end]
            fpos = self.added[ended] % self.N
            self.frames[ended, fpos] = final_frame.to(dev, self.frames.dtype)[end]
            self.actions[ended, fpos] = 0
            self.rewards[ended, fpos] = 0.0
            self.flags[ended, fpos] = 0
            self.added[ended] += 1
        self._next_start = end
        if self.sampler != "uniform":
            self._refresh_priorities(old_lo, old_hi)

    def _add_numpy(self, frame, action, reward, terminated, truncated, final_frame) -> None:
        """add() on numpy views of the storage, row for row the same writes."""
        n = self._np
        terminated = _numpy(terminated).astype(bool, copy=False)
        end = terminated | _numpy(truncated).astype(bool, copy=False)
        members = n.members
        pos = n.added % self.N
        n.frames[members, pos] = _numpy(frame)
        n.actions[members, pos] = _numpy(action)
        n.rewards[members, pos] = _numpy(reward)
        n.flags[members, pos] = (terminated.astype(np.uint8) | (end.astype(np.uint8) << 1) | 4
                                 | (n.next_start.astype(np.uint8) << 3))
        n.added += 1
        if end.any():
            ended = members[end]
            fpos = n.added[ended] % self.N
            n.frames[ended, fpos] = _numpy(final_frame)[end]
            n.actions[ended, fpos] = 0
            n.rewards[ended, fpos] = 0.0
            n.flags[ended, fpos] = 0
            n.added[ended] += 1
        n.next_start[:] = end

    def cut_episodes(self) -> None:
        """End every member's current episode as a truncation after the newest row.

        Used when a resumed run could not restore its environments: the newest row bootstraps from its own
        observation (one slightly wrong transition per member) instead of from a frame of a new episode.
        """
        has_rows = (self.added > 0) & ~self._next_start
        if not has_rows.any():
            return
        m = torch.arange(self.M, device=self.device)[has_rows]
        last = (self.added[m] - 1) % self.N
        self.flags[m, last] |= 2
        frame = self.frames[m, last].clone()
        old_lo, old_hi = self._window(self.added)
        fpos = self.added[m] % self.N
        self.frames[m, fpos] = frame
        self.actions[m, fpos] = 0
        self.rewards[m, fpos] = 0.0
        self.flags[m, fpos] = 0
        self.added[m] += 1
        self._next_start[:] = True
        if self.sampler != "uniform":
            self._refresh_priorities(old_lo, old_hi)

    def _refresh_priorities(self, old_lo: torch.Tensor, old_hi: torch.Tensor) -> None:
        """Rows entering the sampleable window get the maximum priority; rows leaving it get zero."""
        new_lo, new_hi = self._window(self.added)
        offsets = torch.arange(2, device=self.device)  # the window moves by one or two rows per add
        m = torch.arange(self.M, device=self.device).unsqueeze(1).expand(-1, 2)
        leaving = old_lo.unsqueeze(1) + offsets
        leave_mask = leaving < new_lo.unsqueeze(1)
        entering = old_hi.unsqueeze(1) + 1 + offsets
        enter_mask = (entering <= new_hi.unsqueeze(1)) & (entering >= 0)
        if leave_mask.any():
            mm, rows = m[leave_mask], leaving[leave_mask] % self.N
            self.raw[mm, rows] = 0.0
            self.tree.set(mm, rows, torch.zeros_like(rows, dtype=torch.float64))
            self.ranked = False
        if enter_mask.any():
            mm, rows = m[enter_mask], entering[enter_mask] % self.N
            valid = (self.flags[mm, rows] & 4) > 0
            mm, rows = mm[valid], rows[valid]
            if len(rows):
                # a new transition gets the largest priority so it is seen at least once (Schaul et al. 2016)
                self.raw[mm, rows] = self.max_raw[mm]
                if self.sampler == "proportional":
                    self.tree.set(mm, rows, self.tree_value(self.max_raw[mm]))
                else:
                    self.ranked = False

    def tree_value(self, raw: torch.Tensor) -> torch.Tensor:
        return raw.to(torch.float64).pow(self.alpha)

    # ----------------------------------------------------------------------------------------- reading
    def size(self) -> torch.Tensor:
        """Sampleable rows per member (an upper bound: episode-final rows are inside the window)."""
        lo, hi = self._window(self.added)
        return (hi - lo + 1).clamp(min=0)

    def can_sample(self) -> bool:
        return bool((self.size() > 0).all())

    def _uniform_indices(self, batch_size: int) -> torch.Tensor:
        """Uniform over the sampleable rows that hold an action. Episode-final rows (no action) are rejected:
        each member draws half again as many candidates as it needs and keeps the first valid ones, so the
        common case costs one draw for all members; a member short of valid candidates draws again from its
        own stream only."""
        lo, hi = self._window(self.added)
        span = (hi - lo + 1).unsqueeze(1).to(torch.float64)
        extra = batch_size + batch_size // 2
        cand = lo.unsqueeze(1) + (member_rand(self.generators, (extra,), self.device).double() * span).long()
        valid = (self.flags.gather(1, cand % self.N) & 4) > 0
        # stable order: valid candidates first, each group in draw order
        order = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)[:, :batch_size]
        idx = cand.gather(1, order)
        short = valid.sum(1) < batch_size
        for k in torch.nonzero(short).flatten().tolist():
            idx[k] = self._redraw_member(k, batch_size, lo[k], span[k], cand[k][valid[k]])
        return idx

    def _uniform_indices_numpy(self, batch_size: int) -> np.ndarray:
        """_uniform_indices on numpy views: the same draws, candidates and order."""
        n = self._np
        lo = np.maximum(n.added - self.N + self.frame_stack - 1, 0)
        hi = n.added - 1 - self.n_step
        span = (hi - lo + 1)[:, None].astype(np.float64)
        extra = batch_size + batch_size // 2
        u = self._uniforms.take(extra)
        cand = lo[:, None] + (u.astype(np.float64) * span).astype(np.int64)
        valid = (np.take(n.flags, n.row0 + cand % self.N) & 4) > 0
        if valid[:, :batch_size].all():  # the common case: the first batch_size candidates are the stable order's
            return cand[:, :batch_size]
        order = np.argsort(~valid, axis=1, kind="stable")[:, :batch_size]
        idx = cand[n.members_column, order]
        for k in np.flatnonzero(valid.sum(1) < batch_size):
            idx[k] = self._redraw_member(int(k), batch_size, torch.tensor(lo[k]), torch.from_numpy(span[k]),
                                         torch.from_numpy(cand[k][valid[k]]), self._uniforms).numpy()
        return idx

    def _gather_one_step_numpy(self, idx: np.ndarray) -> Batch:
        """_gather_one_step for single frames on numpy views (fancy indexing copies, so the batch owns its rows)."""
        n, rows = self._np, self.M * self.N
        flat = n.row0 + idx % self.N
        flat_next = n.row0 + (idx + 1) % self.N
        frames = n.frames.reshape(rows, *n.frames.shape[2:])
        discount = np.where((np.take(n.flags, flat) & 1) > 0, 0.0, self.gamma).astype(np.float32)
        action = torch.from_numpy(np.take(n.actions.reshape(rows, *n.actions.shape[2:]), flat, axis=0))
        return Batch(obs=torch.from_numpy(np.take(frames, flat, axis=0)),
                     action=action if action.is_floating_point() else action.long(),
                     reward=torch.from_numpy(np.take(n.rewards, flat)), discount=torch.from_numpy(discount),
                     next_obs=torch.from_numpy(np.take(frames, flat_next, axis=0)), index=torch.from_numpy(idx),
                     weight=torch.ones(self.M, idx.shape[1]))

    def _redraw_member(self, k: int, batch_size: int, lo: torch.Tensor, span: torch.Tensor, kept: torch.Tensor,
                       uniforms: UniformBlocks | None = None) -> torch.Tensor:
        """Member k's candidates after its first draw fell short, drawn from its own stream (through ``uniforms``
        where the first draw came from them)."""
        for _ in range(1000):
            if uniforms is not None:
                u = torch.from_numpy(uniforms.take_member(k, batch_size))
            else:
                u = torch.rand(batch_size, generator=self.generators[k], device=self.generators[k].device)
            cand = lo + (u.to(self.device).double() * span).long()
            kept = torch.cat([kept, cand[(self.flags[k, cand % self.N] & 4) > 0]])
            if len(kept) >= batch_size:
                return kept[:batch_size]
        raise RuntimeError("replay holds no valid transition to sample")

    def _prioritized_indices(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        total = self.tree.total().unsqueeze(1)
        # stratified: one draw in each of B equal slices of the total priority mass (Schaul et al. 2016)
        u = member_rand(self.generators, (batch_size,), self.device).double()
        target = (torch.arange(batch_size, device=self.device).double() + u) / batch_size * total
        leaf = self.tree.find(target.clamp(max=total * (1 - 1e-12)))
        m = torch.arange(self.M, device=self.device).unsqueeze(1).expand_as(leaf)
        prob = self.tree.get(m, leaf) / total
        lo, hi = self._window(self.added)
        # logical index of a physical row: the unique one inside [lo, hi]
        idx = lo.unsqueeze(1) + (leaf - lo.unsqueeze(1) % self.N) % self.N
        return idx, prob

    def sample(self, batch_size: int, beta: float = 0.0) -> Batch:
        """A minibatch for every member; beta is the importance-sampling exponent (prioritized only)."""
        if self._np is not None:
            idx = self._uniform_indices_numpy(batch_size)
            if self.n_step == 1 and self.frame_stack == 1:
                return self._gather_one_step_numpy(idx)
            return self._gather(torch.from_numpy(idx), torch.ones(self.M, batch_size))
        if self.sampler == "uniform":
            idx = self._uniform_indices(batch_size)
            weight = torch.ones(self.M, batch_size, device=self.device)
        else:
            if self.sampler == "rank" and not self.ranked:
                self.rerank()
            idx, prob = self._prioritized_indices(batch_size)
            count = self.count_prioritized().unsqueeze(1).double()
            w = (count * prob).pow(-beta)
            weight = (w / w.max(dim=1, keepdim=True).values).float()
        return self._gather(idx, weight)

    def count_prioritized(self) -> torch.Tensor:
        return (self.raw > 0).sum(1)

    def _stack(self, idx: torch.Tensor) -> torch.Tensor:
        """Frame stacks ending at logical rows idx [M, B]: frames before the episode's start are zeros."""
        k = self.frame_stack
        if k == 1:
            return self.frames[self._members_column, idx % self.N]
        rows = (idx.unsqueeze(-1) - torch.arange(k - 1, -1, -1, device=self.device)) % self.N  # [M,B,k] old->new
        m = torch.arange(self.M, device=self.device).view(-1, 1, 1)
        frames = self.frames[m, rows]
        if k == 1:
            return frames[:, :, 0]
        start = (self.flags[m, rows] & 8) > 0
        # frame i is kept iff no episode start lies strictly after it, up to the newest frame
        later_start = torch.flip(torch.cumsum(torch.flip(start.long(), [-1]), -1), [-1]) - start.long()
        keep = later_start == 0
        return frames * keep.view(*keep.shape, *([1] * (frames.dim() - 3))).to(frames.dtype)

    def _gather(self, idx: torch.Tensor, weight: torch.Tensor) -> Batch:
        if self.n_step == 1:
            return self._gather_one_step(idx, weight)
        n, m_ix = self.n_step, torch.arange(self.M, device=self.device).unsqueeze(1)
        steps = idx.unsqueeze(-1) + torch.arange(n, device=self.device)  # [M, B, n]
        phys = steps % self.N
        m3 = m_ix.unsqueeze(-1)
        rewards = self.rewards[m3, phys]
        flags = self.flags[m3, phys]
        ended = (flags & 2) > 0
        # alive[i]: no episode end among steps 0..i-1
        alive = torch.cat([torch.ones_like(ended[..., :1]), ~ended[..., :-1]], dim=-1).cumprod(-1).bool()
        powers = self.gamma ** torch.arange(n, device=self.device, dtype=torch.float32)
        reward = (rewards * powers * alive).sum(-1)
        m_steps = alive.sum(-1)  # steps taken before the bootstrap (<= n)
        last = (m_steps - 1).unsqueeze(-1)
        terminal = ((flags.gather(-1, last) & 1) > 0).squeeze(-1)
        discount = torch.where(terminal, torch.zeros_like(reward), self.gamma ** m_steps.float())
        return Batch(obs=self._stack(idx), action=self.actions[m_ix, idx % self.N].long()
                     if not self.actions.is_floating_point() else self.actions[m_ix, idx % self.N],
                     reward=reward, discount=discount, next_obs=self._stack(idx + m_steps), index=idx,
                     weight=weight)

    def _gather_one_step(self, idx: torch.Tensor, weight: torch.Tensor) -> Batch:
        """_gather for n = 1, with fewer operations: the bootstrap row is the next one, whatever the flags."""
        m_ix = self._members_column
        phys = idx % self.N
        flags = self.flags[m_ix, phys]
        discount = torch.where((flags & 1) > 0, 0.0, self.gamma)
        action = self.actions[m_ix, phys]
        return Batch(obs=self._stack(idx), action=action if action.is_floating_point() else action.long(),
                     reward=self.rewards[m_ix, phys], discount=discount, next_obs=self._stack(idx + 1), index=idx,
                     weight=weight)

    # ----------------------------------------------------------------------------------------- priorities
    def update_priorities(self, idx: torch.Tensor, td_error: torch.Tensor) -> None:
        """Set priorities of sampled rows from their TD errors [M, B] (prioritized samplers only)."""
        if self.sampler == "uniform":
            return
        m = torch.arange(self.M, device=self.device).unsqueeze(1).expand_as(idx)
        rows = idx % self.N
        raw = td_error.detach().abs().to(self.device, torch.float32) + self.priority_eps
        self.raw[m, rows] = raw
        self.max_raw = torch.maximum(self.max_raw, raw.max(dim=1).values)
        if self.sampler == "proportional":
            self.tree.set(m.flatten(), rows.flatten(), self.tree_value(raw.flatten()))
            return
        self.ranked = False

    def rerank(self) -> None:
        """Rank sampler: p_i = 1 / rank(i) by |delta| over the sampleable rows (Schaul et al. 2016, Sec. 3.3).

        Ties (new rows all at the largest priority) take consecutive ranks in row order (a stable sort)."""
        self.ranked = True
        order = torch.argsort(self.raw, dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(1, self.N + 1, device=self.device).expand(self.M, -1))
        value = torch.where(self.raw > 0, ranks.double().reciprocal().pow(self.alpha),
                            torch.zeros((), dtype=torch.float64, device=self.device))
        leaves = self.tree.leaves
        self.tree.nodes[:, leaves:leaves + self.N] = value
        self.tree.nodes[:, leaves + self.N:] = 0
        for level in range(self.tree.depth - 1, -1, -1):
            lo, hi = 1 << level, 1 << (level + 1)
            self.tree.nodes[:, lo:hi] = self.tree.nodes[:, 2 * lo:2 * hi:2] + self.tree.nodes[:, 2 * lo + 1:2 * hi:2]

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        state = {k: getattr(self, k) for k in ("frames", "actions", "rewards", "flags", "added", "_next_start")}
        if self.sampler != "uniform":
            state.update(tree=self.tree.nodes, raw=self.raw, max_raw=self.max_raw, ranked=torch.tensor(self.ranked))
        state["generators"] = torch.stack([g.get_state() for g in self.generators])
        if self._uniforms is not None:
            state["uniforms"] = self._uniforms.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        for k in ("frames", "actions", "rewards", "flags", "added", "_next_start"):
            getattr(self, k).copy_(state[k])
        if self.sampler != "uniform":
            self.tree.nodes.copy_(state["tree"])
            self.raw.copy_(state["raw"])
            self.max_raw.copy_(state["max_raw"])
            self.ranked = bool(state["ranked"])
        for g, s in zip(self.generators, state["generators"], strict=True):
            g.set_state(s.clone())
        if self._uniforms is not None:
            self._uniforms.load_state_dict(state["uniforms"])

    def bytes_per_transition(self) -> float:
        """Storage bytes per row of one member, summed over every per-row tensor (for the 7.1 KB budget)."""
        tensors = [self.frames, self.actions, self.rewards, self.flags]
        total = sum(t.element_size() * t[0, 0].numel() for t in tensors)
        if self.sampler != "uniform":
            total += self.raw.element_size() + self.tree.nodes.element_size() * 2 * self.tree.leaves / self.N
        return float(total)


class TransitionReplay:
    """Uniform replay of one-step transitions (x, u, r, x') per member, each added whole: tensors [M, N, ...].

    Imagination rollouts keep their imagined transitions here (Gu et al. 2016, Algorithm 2's R_f), apart from
    the real replay. Every row bootstraps with discount gamma (fixed-horizon tasks have no terminal states).
    Member k writes and samples row k only, drawing from its own generator.
    """

    def __init__(self, members: int, capacity: int, obs_dim: int, action_dim: int, gamma: float,
                 generators: Sequence[torch.Generator]):
        self.N, self.gamma, self.generators = capacity, gamma, list(generators)
        self.obs = torch.zeros(members, capacity, obs_dim)
        self.action = torch.zeros(members, capacity, action_dim)
        self.reward = torch.zeros(members, capacity)
        self.next_obs = torch.zeros(members, capacity, obs_dim)
        self.added = torch.zeros(members, dtype=torch.long)

    def add(self, k: int, obs, action, reward, next_obs) -> None:
        """Append rows [K, ...] for member k, overwriting the oldest."""
        pos = (self.added[k] + torch.arange(obs.shape[0])) % self.N
        for store, rows in ((self.obs, obs), (self.action, action), (self.reward, reward),
                            (self.next_obs, next_obs)):
            store[k, pos] = rows.detach().to(store.dtype).cpu()
        self.added[k] += obs.shape[0]

    def size(self) -> torch.Tensor:
        return self.added.clamp(max=self.N)

    def sample(self, batch_size: int) -> Batch:
        idx = (member_rand(self.generators, (batch_size,), "cpu").double()
               * self.size().unsqueeze(1).double()).long()
        m = torch.arange(idx.shape[0]).unsqueeze(1)
        return Batch(obs=self.obs[m, idx], action=self.action[m, idx], reward=self.reward[m, idx],
                     discount=torch.full(idx.shape, self.gamma), next_obs=self.next_obs[m, idx], index=idx,
                     weight=torch.ones(idx.shape))

    def state_dict(self) -> dict:
        return {"obs": self.obs, "action": self.action, "reward": self.reward, "next_obs": self.next_obs,
                "added": self.added, "generators": torch.stack([g.get_state() for g in self.generators])}

    def load_state_dict(self, state: dict) -> None:
        for key in ("obs", "action", "reward", "next_obs", "added"):
            getattr(self, key).copy_(state[key])
        for g, s in zip(self.generators, state["generators"], strict=True):
            g.set_state(s.clone())


def _numpy(x) -> np.ndarray:
    """A CPU tensor's numpy view, or the array itself."""
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def anneal(start: float, end: float, fraction: float) -> float:
    """Linear interpolation from start to end as fraction goes 0 -> 1 (clamped). Python floats, not np.clip:
    called twice per agent step, where np.clip on a scalar costs ten times the arithmetic."""
    return start + (end - start) * min(max(float(fraction), 0.0), 1.0)
