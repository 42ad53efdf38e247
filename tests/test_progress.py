"""A run a person can watch and trust: progress output, one process per run folder, clean stops on signals,
and MuJoCo's settotalmass deprecation kept out of stderr."""

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from experiments.cli import main
from experiments.progress import EXIT_LOCKED, Progress

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ARGS = ["--algo", "dqn", "--env", "CartPole-v1", "--seeds", "0", "1", "--steps", "3000", "--set", "learning_starts=50",
        "--set", "batch_size=16", "--set", "eval_episodes=2", "--set", "log_period=100", "--set", "eval_period=500",
        "--set", "checkpoint_period=250", "--set", "threads=1"]


def test_log_progress_line_names_steps_speed_time_left_and_median_eval_return():
    out = io.StringIO()
    p = Progress(1000, "dqn CartPole-v1 x3", stream=out, interval=0.0, tty=False)
    p.update(0)
    p.evaluation([10.0, float("nan"), 30.0, 20.0])
    time.sleep(0.01)
    p.update(250)
    line = out.getvalue().splitlines()[-1]
    assert line.startswith("qrepro: dqn CartPole-v1 x3: 250/1,000 agent steps (25%), ")
    assert "steps/s" in line and " left, " in line and line.endswith("eval return (median over members) 20")


def test_terminal_progress_rewrites_one_line_until_the_end():
    out = io.StringIO()
    p = Progress(100, "run", stream=out, interval=0.0, tty=True)
    p.update(0, force=True)
    p.update(50, force=True)
    p.update(100, force=True)
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and "[############............]" in text


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "experiments.cli", "train", *ARGS, "--out", str(out), *extra],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(out: Path, proc: subprocess.Popen) -> int:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            done = json.loads((out / "run.json").read_text())["steps_done"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            done = 0
        if done > 0:
            return done
        time.sleep(0.05)
    raise AssertionError("no checkpoint within 300 s")


def _rows(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path / "metrics.csv")
    return df[df.metric != "steps_per_second"].drop(columns="run_id").reset_index(drop=True)


@pytest.mark.slow
def test_a_second_process_on_a_run_folder_exits_at_once_naming_the_holder_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    first = _start(out, "--quiet")
    try:
        _wait_for_checkpoint(out, first)
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
        code = main(["train", *ARGS, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == EXIT_LOCKED
        assert f"PID {first.pid}" in err and err.count("\n") == 1
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p in before} == before
    finally:
        first.send_signal(signal.SIGKILL)  # a kill -9 leaves the lock file behind, but not the lock
        first.wait()
    assert main(["train", *ARGS, "--out", str(out), "--quiet"]) == 0  # the stale lock does not block a resume
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_sigterm_checkpoints_marks_interrupted_exits_143_and_the_rerun_loses_nothing(tmp_path):
    whole = tmp_path / "whole"
    assert main(["train", *ARGS, "--out", str(whole), "--quiet"]) == 0
    cut = tmp_path / "cut"
    proc = _start(cut, "--progress-seconds", "0.2")
    _wait_for_checkpoint(cut, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    meta = json.loads((cut / "run.json").read_text())
    assert meta["status"] == "interrupted" and 0 < meta["steps_done"] < 3000
    assert "interrupted by signal 15" in err and "agent steps (" in err  # progress lines in the log form
    assert main(["train", *ARGS, "--out", str(cut), "--quiet"]) == 0
    meta = json.loads((cut / "run.json").read_text())
    assert meta["status"] == "complete" and 0 < meta["resumed_from_step"] < 3000
    pd.testing.assert_frame_equal(_rows(cut), _rows(whole), rtol=1e-6)


def test_a_second_signal_ends_the_process_at_once():
    script = textwrap.dedent("""
        import os, signal, time
        from experiments.progress import StopSignals
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            assert stop.received == signal.SIGINT and stop.exit_status() == 130
            print("first signal noted", flush=True)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
            print("still running")
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.stdout == "first signal noted\n"
    assert proc.returncode == -signal.SIGINT


def test_mujoco_runs_keep_the_settotalmass_deprecation_out_of_stderr(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments.cli", "train", "--algo", "ddpg", "--env",
                           "HalfCheetah-v5", "--seeds", "0", "1", "--steps", "60", "--out", str(tmp_path / "run"),
                           "--set", "learning_starts=20", "--set", "batch_size=8", "--set", "hidden=8,8",
                           "--set", "eval_episodes=1", "--set", "eval_max_steps=30", "--quiet"],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "settotalmass" not in proc.stderr + proc.stdout
