"""Replay: n-step returns, frame stacks, prioritized sampling distributions and importance weights."""

import numpy as np
import pytest
import torch
from scipy import stats

from algorithms.members import UniformBlocks, torch_generators
from algorithms.replay import ReplayBuffer


def _fill(buf: ReplayBuffer, episodes: list[list[float]], ends: list[str], frame_value=None):
    """Write episodes of one member (M = 1): rewards per step; ends[i] is 'term' or 'trunc'.

    Frame t of the whole stream holds the value t (so tests can see which rows were read); final
    observations hold 1000 + episode index.
    """
    t = 0
    for e, (rewards, end) in enumerate(zip(episodes, ends, strict=True)):
        for i, r in enumerate(rewards):
            last = i == len(rewards) - 1
            frame = torch.full((1, 1), float(t))
            buf.add(frame, torch.tensor([i % 2]), torch.tensor([r]), torch.tensor([last and end == "term"]),
                    torch.tensor([last and end == "trunc"]), torch.full((1, 1), 1000.0 + e))
            t += 1


def _all_rows(buf: ReplayBuffer):
    """The batch for every sampleable row of member 0, by logical index."""
    lo, hi = buf._window(buf.added)
    idx = torch.arange(int(lo[0]), int(hi[0]) + 1).unsqueeze(0)
    valid = (buf.flags[0, idx[0] % buf.N] & 4) > 0
    idx = idx[:, valid]
    return idx[0].tolist(), buf._gather(idx, torch.ones_like(idx, dtype=torch.float32))


def test_n_step_return_stops_at_termination_and_bootstraps_after_truncation():
    gamma, n = 0.5, 3
    buf = ReplayBuffer(1, 64, (1,), torch.float32, n_step=n, gamma=gamma)
    # episode 0 terminates after 4 steps, episode 1 is truncated after 2 steps, episode 2 keeps going
    _fill(buf, [[1, 2, 3, 4], [10, 20], [5, 5, 5, 5, 5]], ["term", "trunc", "none"])
    idx, b = _all_rows(buf)
    by_row = {i: k for k, i in enumerate(idx)}
    # rows 0..3 are episode 0, row 4 its final observation, rows 5,6 episode 1, row 7 final, 8.. episode 2
    r0 = by_row[0]  # 1 + .5*2 + .25*3, bootstrap from row 3 (frame 3) with gamma^3
    assert b.reward[0, r0].item() == pytest.approx(1 + 0.5 * 2 + 0.25 * 3)
    assert b.discount[0, r0].item() == pytest.approx(0.125)
    assert b.next_obs[0, r0].item() == 3.0
    r2 = by_row[2]  # 3 + .5*4, then termination: no bootstrap
    assert b.reward[0, r2].item() == pytest.approx(3 + 0.5 * 4)
    assert b.discount[0, r2].item() == 0.0
    r5 = by_row[5]  # 10 + .5*20, then truncation: bootstrap from the final observation with gamma^2
    assert b.reward[0, r5].item() == pytest.approx(10 + 0.5 * 20)
    assert b.discount[0, r5].item() == pytest.approx(0.25)
    assert b.next_obs[0, r5].item() == 1001.0
    assert 4 not in by_row and 7 not in by_row  # final-observation rows are never sampled


def test_one_step_targets_read_the_next_row_and_stop_at_episode_end():
    buf = ReplayBuffer(1, 32, (1,), torch.float32, n_step=1, gamma=0.9)
    _fill(buf, [[1, 2], [3, 4, 5]], ["term", "none"])
    idx, b = _all_rows(buf)
    by_row = {i: k for k, i in enumerate(idx)}
    assert b.next_obs[0, by_row[0]].item() == 1.0 and b.discount[0, by_row[0]].item() == pytest.approx(0.9)
    assert b.discount[0, by_row[1]].item() == 0.0  # terminal
    assert b.obs[0, by_row[3]].item() == 2.0  # row 3 holds the second episode's first frame (step 2)


def test_frame_stack_zero_pads_before_episode_start_and_stores_each_frame_once():
    buf = ReplayBuffer(1, 32, (1,), torch.float32, frame_stack=3, n_step=1, gamma=0.9)
    _fill(buf, [[0, 0], [0, 0, 0, 0]], ["term", "none"])
    idx, b = _all_rows(buf)
    by_row = {i: k for k, i in enumerate(idx)}
    # stream frames: ep0 rows 0,1 (frames 0,1), final row 2, ep1 rows 3..6 (frames 2..5)
    assert b.obs[0, by_row[0]].flatten().tolist() == [0.0, 0.0, 0.0]
    assert b.obs[0, by_row[1]].flatten().tolist() == [0.0, 0.0, 1.0]
    assert b.next_obs[0, by_row[1]].flatten().tolist() == [0.0, 1.0, 1000.0]
    assert b.obs[0, by_row[3]].flatten().tolist() == [0.0, 0.0, 2.0]  # no frame of episode 0 leaks in
    assert b.obs[0, by_row[5]].flatten().tolist() == [2.0, 3.0, 4.0]
    assert buf.frames.shape == (1, 32, 1)


def test_wrapped_buffer_never_samples_rows_whose_stack_was_overwritten():
    buf = ReplayBuffer(1, 10, (1,), torch.float32, frame_stack=4, n_step=2, gamma=0.9,
                       generators=torch_generators([0], "r"))
    _fill(buf, [[0] * 25], ["none"])
    b = buf.sample(512)
    # the 10 newest logical rows are 15..24; a stack of 4 ending at t needs t-3 >= 15; t+2 <= 24
    assert int(b.index.min()) >= 18 and int(b.index.max()) <= 22
    assert torch.all(b.obs[0, :, -1, 0] == b.index[0].float())
    assert torch.all(b.obs[0, :, 0, 0] == b.index[0].float() - 3)


def _prioritized(sampler: str, alpha: float, priorities: np.ndarray, seed=0) -> ReplayBuffer:
    n = len(priorities)
    buf = ReplayBuffer(1, n + 8, (1,), torch.float32, n_step=1, gamma=0.9, sampler=sampler, alpha=alpha,
                       priority_eps=0.0, generators=torch_generators([seed], "per"))
    _fill(buf, [[0] * (n + 1)], ["none"])
    idx = torch.arange(n).unsqueeze(0)
    buf.update_priorities(idx, torch.as_tensor(priorities, dtype=torch.float32).unsqueeze(0))
    return buf


def test_proportional_sampling_frequencies_match_p_alpha_over_sum():
    pri = np.array([0.1, 0.5, 1.0, 2.0, 4.0, 0.25, 3.0, 1.5])
    alpha = 0.6
    buf = _prioritized("proportional", alpha, pri)
    counts = np.zeros(len(pri))
    for _ in range(200):
        b = buf.sample(64, beta=0.4)
        counts += np.bincount(b.index[0].numpy(), minlength=len(pri))[: len(pri)]
    expected = pri**alpha / (pri**alpha).sum() * counts.sum()
    assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_rank_sampling_frequencies_match_inverse_rank_alpha():
    pri = np.array([0.3, 9.0, 0.1, 4.0, 1.0, 2.0])  # ranks 5, 1, 6, 2, 4, 3
    alpha = 0.7
    buf = _prioritized("rank", alpha, pri)
    ranks = np.array([5, 1, 6, 2, 4, 3])
    counts = np.zeros(len(pri))
    for _ in range(200):
        counts += np.bincount(buf.sample(64, beta=0.5).index[0].numpy(), minlength=len(pri))[: len(pri)]
    p = (1.0 / ranks) ** alpha
    assert stats.chisquare(counts, p / p.sum() * counts.sum()).pvalue > 1e-3


def test_importance_weights_follow_n_p_to_minus_beta_over_batch_max():
    pri = np.array([1.0, 2.0, 4.0, 8.0])
    alpha, beta = 1.0, 0.5
    buf = _prioritized("proportional", alpha, pri)
    b = buf.sample(16, beta=beta)
    prob = pri**alpha / (pri**alpha).sum()
    w = (len(pri) * prob[b.index[0].numpy()]) ** -beta
    np.testing.assert_allclose(b.weight[0].numpy(), w / w.max(), rtol=1e-5)


def test_priority_update_changes_sampling_and_new_rows_get_max_priority():
    buf = _prioritized("proportional", 1.0, np.array([1.0, 1.0, 1.0, 1.0]))
    buf.update_priorities(torch.tensor([[2]]), torch.tensor([[100.0]]))
    leaf = buf.tree.get(torch.tensor([0]), torch.tensor([2]))
    assert leaf.item() == pytest.approx(100.0)
    assert buf.tree.total().item() == pytest.approx(103.0)
    frac = np.mean([(buf.sample(32).index == 2).float().mean().item() for _ in range(50)])
    assert frac > 0.9
    _fill(buf, [[0, 0]], ["none"])  # two new rows; the one now sampleable enters at the max priority
    assert buf.raw[0, 4].item() == pytest.approx(100.0)


def test_members_sample_from_their_own_streams():
    def run(seeds):
        buf = ReplayBuffer(len(seeds), 50, (1,), torch.float32, n_step=1, generators=torch_generators(seeds, "s"))
        for t in range(40):
            buf.add(torch.full((len(seeds), 1), float(t)), torch.zeros(len(seeds)), torch.zeros(len(seeds)),
                    torch.zeros(len(seeds), dtype=torch.bool), torch.zeros(len(seeds), dtype=torch.bool),
                    torch.zeros(len(seeds), 1))
        return buf.sample(16).index

    assert torch.equal(run([3, 9, 4])[1], run([9])[0])


def test_atari_transition_costs_at_most_7_1_kb():
    buf = ReplayBuffer(2, 1000, (84, 84), torch.uint8, frame_stack=4, n_step=3, sampler="proportional")
    assert buf.bytes_per_transition() <= 7100
    uniform = ReplayBuffer(2, 1000, (84, 84), torch.uint8, frame_stack=4)
    assert uniform.bytes_per_transition() <= 7070


def test_rank_sampling_after_adds_and_updates_matches_inverse_rank_alpha_with_new_rows_tied_on_top():
    # Issue 9: new rows kept the weight of rank 1 and replayed rows kept their old weights until a re-sort
    # every 1,000 updates. Here: 1,960 rows given distinct priorities in 49 updates of 40 rows (fewer
    # than 1,000), then 40 new rows that enter tied at the largest priority so far, then 10 updates that
    # make 40 of the old rows sink, or rise above the new ones. Default constructor settings otherwise.
    alpha, old, fresh = 0.7, 1_960, 40
    buf = ReplayBuffer(1, 4_096, (1,), torch.float32, n_step=1, sampler="rank", alpha=alpha,
                       generators=torch_generators([0], "per-defaults"))
    _fill(buf, [[0] * (old + 1)], ["none"])
    rng = np.random.default_rng(0)
    td = rng.permutation(old).astype(np.float32) / old + 0.5  # |delta| in [0.5, 1.5), all distinct
    for chunk in np.split(np.arange(old), old // 40):
        buf.update_priorities(torch.as_tensor(chunk).unsqueeze(0), torch.as_tensor(td[chunk]).unsqueeze(0))
    _fill(buf, [[0] * fresh], ["none"])  # rows old..old+fresh-1 become sampleable: fresh new transitions
    top = max(1.0, float(td.max()) + 1e-6)  # their priority: the largest seen (the buffer starts from 1)
    for _ in range(10):
        rows = rng.choice(old, 4, replace=False)
        td[rows] = rng.uniform(0.0, 2.0, 4).astype(np.float32)  # some below, some above every other row
        buf.update_priorities(torch.as_tensor(rows).unsqueeze(0), torch.as_tensor(td[rows]).unsqueeze(0))
    assert int(buf.size()[0]) == old + fresh
    counts = np.zeros(old + fresh)
    draws = 0
    for _ in range(1_000):
        idx = buf.sample(256).index[0].numpy()
        counts += np.bincount(idx, minlength=old + fresh)
        draws += len(idx)
    # Exact ranks by current priority over all rows; the fresh rows are tied, so they hold a block of 40
    # consecutive ranks whose order among them is arbitrary: compared as one bin.
    priority = np.concatenate([td + 1e-6, np.full(fresh, top, dtype=np.float32)])
    order = np.argsort(-priority, kind="stable")
    rank = np.empty(old + fresh, dtype=np.int64)
    rank[order] = np.arange(1, old + fresh + 1)
    assert np.ptp(rank[old:]) == fresh - 1  # the tied block is contiguous
    assert (priority[:old] > top).sum() > 0 and rank[old:].min() > 1  # some replayed rows rose above it
    p = rank.astype(np.float64) ** -alpha
    p /= p.sum()
    observed = np.concatenate([[counts[old:].sum()], counts[:old]])
    expected = np.concatenate([[p[old:].sum()], p[:old]]) * draws
    # Chi-square over 1,961 bins at 256,000 draws (stratified draws only lower the statistic): the exact
    # distribution passes at p > 1e-3; the old sampler fails it by orders of magnitude.
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    tv = 0.5 * np.abs(observed / draws - expected / draws).sum()
    # total variation: the multinomial expectation bound sum_i sqrt(p_i (1 - p_i) / n) / 2 at these draws
    bound = 0.5 * np.sqrt(expected / draws * (1 - expected / draws) / draws).sum()
    assert tv <= 1.5 * bound


@pytest.mark.parametrize("sampler", ["rank", "proportional"])
def test_prioritized_replay_state_dict_restores_the_same_next_minibatch(sampler):
    buf = _prioritized(sampler, 0.7, np.array([0.3, 9.0, 0.1, 4.0, 1.0, 2.0]))
    _fill(buf, [[0] * 3], ["none"])  # new rows since the last sort: the restored buffer must re-sort them too
    copy = ReplayBuffer(1, buf.N, (1,), torch.float32, n_step=1, gamma=0.9, sampler=sampler, alpha=0.7,
                        priority_eps=0.0, generators=torch_generators([9], "other"))
    copy.load_state_dict({k: v.clone() for k, v in buf.state_dict().items()})
    a, b = buf.sample(32, beta=0.5), copy.sample(32, beta=0.5)
    assert torch.equal(a.index, b.index) and torch.equal(a.weight, b.weight)


@pytest.mark.parametrize("n_step, frame_stack", [(1, 1), (3, 1), (1, 4)])
def test_numpy_fast_path_writes_and_samples_exactly_what_the_torch_path_does(n_step, frame_stack):
    """The CPU fast path (numpy views of the storage) against the torch path on twin buffers: the same stored
    rows and, from the same generators, the same minibatches, through episode ends, a wrapped buffer and a
    member with too few valid candidates (the redraw)."""
    M, capacity, batch = 3, 40, 8
    fast, slow = (ReplayBuffer(M, capacity, (2,), torch.float32, n_step=n_step, frame_stack=frame_stack,
                               gamma=0.9, generators=torch_generators(range(M), "replay")) for _ in range(2))
    slow._np = None
    assert fast._np is not None
    rng = np.random.default_rng(0)
    for step in range(130):
        frame = torch.from_numpy(rng.normal(size=(M, 2)))  # float64 rows, rounded to float32 on the way in
        ends = rng.random(M)
        terminated, truncated = torch.from_numpy(ends < 0.08), torch.from_numpy((ends >= 0.08) & (ends < 0.15))
        args = (frame, torch.from_numpy(rng.integers(0, 4, M)), torch.from_numpy(rng.normal(size=M)), terminated,
                truncated, frame + 100)
        fast.add(*args)
        slow.add(*args)
        if step >= 12 and step % 3 == 0:
            a, b = fast.sample(batch), slow.sample(batch)
            for name in ("obs", "action", "reward", "discount", "next_obs", "index", "weight"):
                x, y = getattr(a, name), getattr(b, name)
                assert x.dtype == y.dtype and torch.equal(x, y), (step, name)
    for name in ("frames", "actions", "rewards", "flags", "added", "_next_start"):
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name


def test_uniform_blocks_give_each_member_the_numbers_its_generator_gives_call_by_call_and_resume_exactly():
    """Buffered draws change no number: mixed sizes across block boundaries (and above the block), one member
    drawing alone, and a state saved mid-block and loaded (with the generators' states) into a fresh reader."""
    sizes = [2, 96, 3, 1, 200, 48, 7, 130, 96, 2]
    direct = torch_generators(range(3), "replay")
    want = [[torch.rand(n, generator=g).numpy() for g in direct] for n in sizes]
    alone = torch.rand(50, generator=direct[1]).numpy()
    after = [torch.rand(70, generator=g).numpy() for g in direct]
    catch_up = {k: torch.rand(50, generator=direct[k]).numpy() for k in (0, 2)}
    aligned_again = [torch.rand(300, generator=g).numpy() for g in direct]

    gens = torch_generators(range(3), "replay")
    blocks = UniformBlocks(gens, block=128)
    for n, w in zip(sizes, want, strict=True):
        got = blocks.take(n)
        assert got.shape == (3, n) and got.dtype == np.float32
        assert all(np.array_equal(got[k], w[k]) for k in range(3))
    assert np.array_equal(blocks.take_member(1, 50), alone)
    state = {"blocks": blocks.state_dict(), "gens": [g.get_state() for g in gens]}
    resumed_gens = torch_generators(range(3), "other")
    for g, s in zip(resumed_gens, state["gens"], strict=True):
        g.set_state(s)
    resumed = UniformBlocks(resumed_gens, block=128)
    resumed.load_state_dict(state["blocks"])
    for k in range(3):
        assert np.array_equal(resumed.take_member(k, 70), after[k])
        assert np.array_equal(blocks.take_member(k, 70), after[k])
    # members that have read different counts (member 1's redraw) still take together, each its own numbers
    together_gens = torch_generators(range(3), "other")
    for g, s in zip(together_gens, state["gens"], strict=True):
        g.set_state(s)
    together = UniformBlocks(together_gens, block=128)
    together.load_state_dict(state["blocks"])
    assert np.array_equal(together.take(70), np.stack(after))
    # the other members catch up with member 1: aligned again, a take across a block boundary reads on exactly
    for k in (0, 2):
        assert np.array_equal(together.take_member(k, 50), catch_up[k])
    assert np.array_equal(together.take(300), np.stack(aligned_again))
