"""The runner's buffer of learn() outputs between log points (experiments/runner.py, PendingMetrics)."""

import pytest
import torch

from experiments.runner import PendingMetrics


def _outputs(n: int, members: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"td_loss": torch.rand(members, generator=g) * 1e3, "q_batch_mean": torch.randn(members, generator=g)}
            for _ in range(n)]


def test_means_equal_the_stacked_list_means_bit_for_bit_across_growth():
    # 1,000 outputs: the buffer grows from 64 rows by doubling several times
    outs = _outputs(1000)
    pending = PendingMetrics()
    for out in outs:
        pending.add(out)
    means = pending.means()
    assert list(means) == ["td_loss", "q_batch_mean"]  # the order learn() gave them: the order of the rows
    for name in means:
        assert torch.equal(means[name], torch.stack([o[name] for o in outs]).float().mean(0))


def test_clear_starts_a_new_log_interval_and_an_empty_interval_has_no_means():
    pending = PendingMetrics(_outputs(5))
    pending.clear()
    assert pending.means() == {}
    later = _outputs(7)[2:]
    for out in later:
        pending.add(out)
    assert torch.equal(pending.means()["td_loss"], torch.stack([o["td_loss"] for o in later]).mean(0))


def test_checkpoint_list_round_trip():
    # a checkpoint's "pending" is the list of outputs, as before this buffer existed: old checkpoints load
    outs = _outputs(70)
    restored = PendingMetrics(PendingMetrics(outs).as_list())
    assert restored.n == 70
    for a, b in zip(restored.as_list(), outs, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_outputs_with_other_metrics_are_rejected_naming_both_sets():
    pending = PendingMetrics(_outputs(2))
    with pytest.raises(ValueError, match=r"\['td_loss'\] after \['q_batch_mean', 'td_loss'\]"):
        pending.add({"td_loss": torch.zeros(3)})
