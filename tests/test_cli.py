"""The run contract: outputs, bad input, divergence, and resume after a kill."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from experiments.cli import main
from experiments.contract import COLUMNS
from experiments.provenance import peak_memory_mb
from experiments.runner import CHECKPOINT_FORMAT

SMALL = ["--set", "learning_starts=50", "--set", "batch_size=16", "--set", "eval_episodes=2",
         "--set", "log_period=100"]


def _train(out: Path, *extra: str, algo="dqn", env="CartPole-v1", steps="200", seeds=("0", "1")) -> int:
    return main(["train", "--algo", algo, "--env", env, "--seeds", *seeds, "--steps", steps, "--out", str(out),
                 *SMALL, *extra])


def test_train_writes_tidy_metrics_run_json_and_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert _train(out) == 0
    df = pd.read_csv(out / "metrics.csv")
    assert tuple(df.columns) == COLUMNS
    assert {"eval_return", "q_estimate", "true_value", "td_loss", "steps_per_second", "train_return"} <= set(df.metric)
    assert set(df.seed) == {0, 1}
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "complete" and meta["steps_done"] == 200
    assert {"torch", "gymnasium", "ale-py", "mujoco"} <= set(meta["versions"])
    assert meta["git"]["commit"] and meta["device"]["device"] == "cpu" and meta["config_hash"]
    assert (out / "checkpoints" / "latest.pt").exists()
    assert not [p for p in out.rglob("*.tmp")]
    assert _train(out) == 0  # a complete run is not redone


@pytest.mark.parametrize("over, needle", [
    ({"--algo": ["dqm"]}, "unknown algo 'dqm'; valid: "),
    ({"--env": ["CartPol-v1"]}, "unknown env 'CartPol-v1'; valid: "),
    ({"--set": ["gama=0.9"]}, "--set gama: unknown key for dqn; valid: "),
    ({"--set": ["lr=fast"]}, "--set lr=fast: expected float"),
    ({"--steps": ["-5"]}, "--steps -5: must be > 0"),
    ({"--set": ["batch_size=512", "replay_size=100"]}, "batch_size=512: must not exceed replay_size=100"),
    ({"--set": ["loss=l1"]}, "loss='l1': valid: huber, mse"),
    ({"--set": ["sampler=heap"]}, "sampler='heap': valid: uniform, proportional, rank"),
    ({"--seeds": ["3", "3"]}, "seeds must be distinct"),
    ({"--env": ["Pendulum-v1"]}, "needs discrete actions but env Pendulum-v1 has continuous actions"),
    ({"--device": ["tpu"]}, "--device 'tpu': valid: cpu, cuda, cuda:N, auto"),
])
def test_bad_input_exits_2_with_one_clear_message_and_writes_nothing(tmp_path, capsys, over, needle):
    out = tmp_path / "run"
    args = {"--algo": ["dqn"], "--env": ["CartPole-v1"], "--steps": ["100"], "--seeds": ["0"], **over}
    argv = ["train", "--out", str(out)]
    for flag, values in args.items():
        argv += [x for v in values for x in (flag, v)] if flag == "--set" else [flag, *values]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1
    assert not out.exists()


def test_unreadable_or_mismatched_checkpoint_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest.pt").write_bytes(b"not a checkpoint")
    assert _train(out) == 2
    assert "is unreadable" in capsys.readouterr().err
    other = tmp_path / "other"
    assert _train(other, steps="100") == 0
    before = sorted(p.name for p in other.iterdir())
    assert _train(other, "--set", "gamma=0.5", steps="100") == 2
    assert "was made with another configuration" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == before
    # a checkpoint of an older format (weights in another layout) is refused, naming the commit to resume with
    ckpt = other / "checkpoints" / "latest.pt"
    state = torch.load(ckpt, weights_only=True)
    torch.save({**state, "format": CHECKPOINT_FORMAT - 1}, ckpt)
    assert _train(other, steps="100") == 2
    old, now = CHECKPOINT_FORMAT - 1, CHECKPOINT_FORMAT
    assert f"has format {old}, this qrepro reads format {now}" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == before


def test_a_run_killed_before_its_first_checkpoint_starts_again_and_anything_else_is_refused(tmp_path, capsys):
    whole = tmp_path / "whole"
    assert _train(whole, steps="100") == 0
    # what a SIGKILL before the first checkpoint leaves: run.json (status running, from the first step) and a
    # stale lock, maybe metrics.csv; a retry must run it from step 0 to the same rows, not fail on every retry
    killed = tmp_path / "killed"
    killed.mkdir()
    meta = json.loads((whole / "run.json").read_text())
    (killed / "run.json").write_text(json.dumps({**meta, "status": "running", "steps_done": 0}))
    (killed / "metrics.csv").write_text("stale rows of the killed run\n")
    (killed / ".lock").write_text("999999")
    assert _train(killed, steps="100") == 0
    assert "before its first checkpoint; starting it again from step 0" in capsys.readouterr().err
    assert json.loads((killed / "run.json").read_text())["status"] == "complete"

    def rows(path):
        df = pd.read_csv(path / "metrics.csv")
        return df[df.metric != "steps_per_second"].drop(columns="run_id").reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(killed), rows(whole), rtol=1e-6)
    # another configuration's run, a finished run whose checkpoint is gone, or files that are not a run's: refused,
    # each naming why, and nothing is touched
    cases = {"another": ({**meta, "status": "running"}, {}, "its run.json is of another configuration"),
             "finished": ({**meta, "status": "complete"}, {}, "its run.json says 'complete' at agent step 100"),
             "checkpointed": ({**meta, "status": "interrupted", "steps_done": 50}, {},
                              "its run.json says 'interrupted' at agent step 50"),
             "foreign": ({**meta, "status": "running"}, {"notes.txt": "mine"}, "it holds notes.txt, run.json")}
    for name, (run_json, extra, needle) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "run.json").write_text(json.dumps(run_json))
        for file, text in extra.items():
            (folder / file).write_text(text)
        before = {p.name: p.read_text() for p in folder.iterdir()}
        assert _train(folder, *(["--set", "gamma=0.5"] if name == "another" else []), steps="100") == 2
        err = capsys.readouterr().err
        assert "folder is not empty and holds no qrepro checkpoint" in err and needle in err
        assert {p.name: p.read_text() for p in folder.iterdir()} == before


def test_non_finite_loss_stops_the_run_as_diverged_and_keeps_metrics(tmp_path):
    out = tmp_path / "run"
    assert _train(out, "--set", "lr=1e30", "--set", "loss=mse", "--set", "optimizer=adam", steps="2000") == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "diverged"
    assert meta["steps_done"] < 2000 and meta["diverged_seeds"]
    df = pd.read_csv(out / "metrics.csv")
    assert len(df) > 0


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metric_rows_as_an_uninterrupted_run(tmp_path):
    args = ["--algo", "dqn", "--env", "CartPole-v1", "--seeds", "0", "1", "--steps", "3000", *SMALL,
            "--set", "eval_period=500", "--set", "checkpoint_period=250", "--set", "threads=1"]
    whole = tmp_path / "whole"
    assert main(["train", *args, "--out", str(whole)]) == 0

    cut = tmp_path / "cut"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.cli", "train", *args, "--out", str(cut)], env=env)
    run_json = cut / "run.json"

    def steps_done():
        try:
            return json.loads(run_json.read_text())["steps_done"]
        except (FileNotFoundError, json.JSONDecodeError):
            return 0

    deadline = time.time() + 300
    while steps_done() == 0 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = steps_done()
    assert 0 < killed_at < 3000
    # the checkpoint carries the time spent so far, and the resumed run adds its own to it (compute spent)
    checkpoint = torch.load(cut / "checkpoints" / "latest.pt", weights_only=True)
    before, before_cpu = checkpoint["wall_time"], checkpoint["cpu_time"]
    assert before > 0 and before_cpu > 0
    before_peak = checkpoint["peak_memory_mb"]  # the killed process's peak so far
    assert before_peak > 0
    # a checkpoint written before CPU time was recorded: the resumed run cannot know its total, so it gives none
    old = tmp_path / "old"
    shutil.copytree(cut, old)
    torch.save({k: v for k, v in checkpoint.items() if k not in ("cpu_time", "peak_memory_mb")},
               old / "checkpoints" / "latest.pt")
    started, cpu_started, peak_before_resume = time.time(), time.process_time(), peak_memory_mb()
    assert main(["train", *args, "--out", str(cut)]) == 0
    resumed_for, resumed_cpu = time.time() - started, time.process_time() - cpu_started
    meta = json.loads((cut / "run.json").read_text())
    assert meta["status"] == "complete" and 0 < meta["resumed_from_step"] < 3000
    assert before < meta["wall_time_s"] <= before + resumed_for
    assert before_cpu < meta["cpu_time_s"] <= before_cpu + resumed_cpu
    # peak memory: the larger of the killed process's and this one's (pytest's own, since main ran in it)
    assert max(before_peak, peak_before_resume) <= meta["peak_memory_mb"] <= max(before_peak, peak_memory_mb())
    assert main(["train", *args, "--out", str(old)]) == 0
    old_meta = json.loads((old / "run.json").read_text())
    assert old_meta["status"] == "complete" and "cpu_time_s" not in old_meta and old_meta["wall_time_s"] > before
    assert "peak_memory_mb" not in old_meta  # nothing known of the earlier process's peak

    def rows(path):
        df = pd.read_csv(path / "metrics.csv")
        return df[df.metric != "steps_per_second"].drop(columns="run_id").reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(cut), rows(whole), rtol=1e-6)


@pytest.mark.parametrize("algo", ["q_learning", "fitted_q"])
def test_tabular_methods_follow_the_run_contract_and_score_against_q_star(tmp_path, algo):
    out = tmp_path / algo
    code = main(["train", "--algo", algo, "--env", "toy/chain-v0", "--seeds", "0", "1", "--steps", "20000",
                 "--out", str(out), "--set", "epsilon=1.0"])
    assert code == 0
    df = pd.read_csv(out / "metrics.csv")
    assert tuple(df.columns) == COLUMNS and set(df.protocol) == {"exact"}
    final = df[(df.metric == "q_error_max") & (df.step == df.step.max())]
    assert len(final) == 2 and (final.value < 0.05).all()
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_atari_pong_smoke_run_produces_the_overestimation_metrics(tmp_path):
    """A few hundred agent steps of Pong under the nature protocol: plumbing, not learning."""
    out = tmp_path / "pong"
    code = main(["train", "--algo", "double_dqn", "--env", "ALE/Pong-v5", "--seeds", "0", "1", "--steps", "300",
                 "--out", str(out), "--set", "learning_starts=100", "--set", "replay_size=1000",
                 "--set", "eval_episodes=1", "--set", "eval_max_steps=3000", "--set", "log_period=100",
                 "--set", "eval_period=300",
                 "--set", "threads=1"])
    assert code == 0
    df = pd.read_csv(out / "metrics.csv")
    assert {"eval_return", "q_estimate", "true_value", "td_loss", "steps_per_second"} <= set(df.metric)
    assert set(df.protocol) == {"nature"}
    assert (df.frames == 4 * df.step).all()
    final = df[df.metric == "eval_return"]
    assert set(final.seed) == {0, 1} and final.value.between(-21, 21).all()
    meta = json.loads((out / "run.json").read_text())
    assert meta["env_settings"]["repeat_action_probability"] == 0.0 and meta["frames_per_step"] == 4


def test_a_run_is_dirty_when_its_code_changed_but_not_when_the_workflow_rewrote_results(tmp_path):
    from experiments.provenance import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "table.csv").write_text("a\n1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    assert git_commit(tmp_path)["dirty"] is False
    (tmp_path / "results" / "table.csv").write_text("a\n2\n")  # a figure or table job rewrote a result
    assert git_commit(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path)["dirty"] is True
