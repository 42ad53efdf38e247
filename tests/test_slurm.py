"""The cluster path against a real SLURM scheduler: a training job submitted through the SLURM profile and the
executor plugin (to the cluster's default partition), cancelled with scancel after its first checkpoint, is
resubmitted by Snakemake (the profile's retries) and resumes from that checkpoint, and its metrics.csv holds
exactly the rows of an uninterrupted run.

The cluster tests need a running SLURM cluster (`experiments/slurm/local-cluster.sh up` makes one) and are
skipped without one; CI brings one up and sets QREPRO_SLURM_TESTS=1, which turns that skip into a failure.
The comparison script CI runs on the SLURM and local results is tested here too, without a cluster."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments" / "slurm"))
import compare_results  # noqa: E402

# The run the cancel test trains: DQN on CartPole, 2 members, a checkpoint every 250 agent steps (eight in
# all), about 15 s of one core; long enough to cancel after the first checkpoint, short enough for CI.
STEPS = 2_000
SETTINGS = {"learning_starts": 100, "eval_episodes": 2, "eval_period": 250}
RUN = Path("runs/smoke/sensitivity/dqn/CartPole-v1")
# Seconds the plugin waits before its first status check of a job (the profile's 40 s is for real clusters).
STATUS_DELAY = 5


@functools.cache
def cluster_available() -> str | None:
    """None when a SLURM controller answers, else why not (asked once: sinfo takes seconds to give up)."""
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH"
    try:
        subprocess.run(["sinfo", "-h"], check=True, capture_output=True, timeout=15)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        return f"no SLURM controller answers sinfo ({error})"
    return None


def _needs_cluster():
    reason = cluster_available()
    if reason is None:
        return
    if os.environ.get("QREPRO_SLURM_TESTS") == "1":
        pytest.fail(f"QREPRO_SLURM_TESTS=1 but {reason}")
    pytest.skip(f"{reason}; start one with experiments/slurm/local-cluster.sh up")


def _suite_dir(tmp_path: Path) -> tuple[Path, dict]:
    """The sensitivity suite with its smoke scale cut to one DQN run long enough to be cancelled midway, and
    every setting that run trains with (the run's own, e.g. the baseline's learning rate, then the scale's)."""
    suite_dir = tmp_path / "suites"
    suite_dir.mkdir()
    suite = yaml.safe_load((REPO / "experiments" / "suites" / "sensitivity.yaml").read_text())
    smoke = suite["scales"]["smoke"]
    smoke.update(runs=["dqn"], steps=STEPS, envs=["CartPole-v1"], set=SETTINGS)
    (suite_dir / "sensitivity.yaml").write_text(yaml.safe_dump(suite))
    (run,) = [r for r in suite["runs"] if r["label"] == "dqn"]
    return suite_dir, {**run.get("set", {}), **SETTINGS}


def _running_train_job(workdir: Path) -> str | None:
    """The SLURM id of the running train job submitted from ``workdir``, if any."""
    listing = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k|%Z"], capture_output=True, text=True,
                             check=True).stdout
    for line in listing.splitlines():
        job_id, comment, job_dir = line.split("|", 2)
        if comment.startswith("rule_train") and Path(job_dir) == workdir:
            return job_id
    return None


def _steps_done(run_json: Path) -> int:
    """Agent steps of the last checkpoint (run.json is rewritten, atomically, right after each one); 0 before."""
    return json.loads(run_json.read_text())["steps_done"] if run_json.exists() else 0


def _rows(metrics: Path) -> pd.DataFrame:
    rows = pd.read_csv(metrics)
    rows = rows[~rows["metric"].isin(compare_results.TIMING_METRICS)]
    return rows.sort_values(["seed", "metric", "step"], ignore_index=True)


@pytest.mark.slow
def test_cancelled_slurm_job_is_resubmitted_and_resumes_without_losing_or_repeating_a_row(tmp_path):
    _needs_cluster()
    suite_dir, settings = _suite_dir(tmp_path)
    workdir = (tmp_path / "work").resolve()
    log = tmp_path / "snakemake.log"
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(workdir), "--profile", str(REPO / "experiments" / "profiles" / "slurm"),
               "--slurm-init-seconds-before-status-checks", str(STATUS_DELAY),
               "--config", "suites=[sensitivity]", f"suite_dir={suite_dir}",
               "--", str(RUN / "metrics.csv")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    # The same run, uninterrupted and outside SLURM, trains meanwhile on the other core, with the settings the
    # workflow gives it (a reference with other settings differs from the first episode on, not at the resume).
    uninterrupted = tmp_path / "uninterrupted"
    sets = [arg for key, value in {"suite": "sensitivity", **settings, "threads": 1}.items()
            for arg in ("--set", f"{key}={value}")]
    reference = subprocess.Popen([sys.executable, "-m", "experiments.cli", "train", "--algo", "dqn", "--env",
                                  "CartPole-v1", "--seeds", "0", "1", "--steps", str(STEPS), "--out",
                                  str(uninterrupted), "--device", "cpu", *sets], cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with log.open("w") as log_file:
        workflow = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 180
            while (steps_at_cancel := _steps_done(workdir / RUN / "run.json")) == 0:
                assert workflow.poll() is None, log.read_text()[-3_000:]
                assert time.monotonic() < deadline, "no checkpoint within 180 s:\n" + log.read_text()[-3_000:]
                time.sleep(0.2)
            job_id = _running_train_job(workdir)
            assert job_id, "the train job is not running:\n" + log.read_text()[-3_000:]
            subprocess.run(["scancel", job_id], check=True)
            assert workflow.wait(timeout=300) == 0, log.read_text()[-5_000:]
        finally:
            for process in (workflow, reference):
                if process.poll() is None:
                    process.kill()
    text = log.read_text()
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED'" in text, text[-3_000:]
    submissions = [line for line in text.splitlines() if "has been submitted with SLURM jobid" in line]
    assert len(submissions) == 2 and all("rule_train" in line for line in submissions), submissions

    run = json.loads((workdir / RUN / "run.json").read_text())
    assert run["status"] == "complete" and run["steps_done"] == STEPS
    # resumed from a checkpoint at or after the one seen before the cancel, never from scratch; scancel sends
    # SIGTERM, on which the run checkpoints the very step it was on (README: clean stops on signals), so the
    # resume point need not be one of the periodic checkpoints
    assert 0 < steps_at_cancel <= run["resumed_from_step"] < STEPS

    reference_output = reference.communicate(timeout=300)[0]
    assert reference.returncode == 0, reference_output[-3_000:]
    resumed_config = json.loads((workdir / RUN / "run.json").read_text())["config"]
    assert resumed_config == json.loads((uninterrupted / "run.json").read_text())["config"]
    resumed, whole = _rows(workdir / RUN / "metrics.csv"), _rows(uninterrupted / "metrics.csv")
    keys = ["run_id", "seed", "step", "frames", "episodes", "metric"]
    assert not resumed.duplicated(keys).any()
    pd.testing.assert_frame_equal(resumed[keys], whole[keys])
    # the resumed run continues the very trajectory it would have followed (README, run contract)
    assert resumed["value"].to_numpy() == pytest.approx(whole["value"].to_numpy(), rel=1e-6, abs=1e-9)


@pytest.mark.slow
def test_gpu_partition_schedules_a_job_asking_for_one_gpu():
    _needs_cluster()
    partitions = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, check=True).stdout
    if "gpu" not in partitions.split():
        pytest.skip("no partition named gpu (local-cluster.sh makes one)")
    result = subprocess.run(["sbatch", "--wait", "--parsable", "-p", "gpu", "--gpus=1", "-t", "1", "--output",
                             "/dev/null", "--wrap", "true"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --- the comparison of two result folders (no cluster needed) ------------------------------------------------

def _results(root: Path, value: float, speed: float) -> Path:
    tidy = root / "results" / "smoke" / "tidy"
    tidy.mkdir(parents=True)
    rows = pd.DataFrame({"run_id": ["r", "r"], "seed": [0, 0], "step": [10, 10],
                         "metric": ["eval_return", "steps_per_second"], "value": [value, speed]})
    rows.to_csv(tidy / "suite.csv", index=False)
    provenance = pd.DataFrame({"run_dir": ["runs/r"], "config_hash": ["abc"], "wall_time_s": [speed],
                               "cpu_time_s": [speed / 2], "started": [f"t{speed}"], "peak_memory_mb": [speed * 3]})
    provenance.to_csv(root / "results" / "smoke" / "provenance.csv", index=False)
    return root


def test_compare_results_ignores_timing_and_memory_but_flags_a_changed_metric_row(tmp_path):
    local = _results(tmp_path / "local", value=1.5, speed=100.0)
    same = _results(tmp_path / "same", value=1.5, speed=7.0)
    other = _results(tmp_path / "other", value=2.5, speed=100.0)
    assert compare_results.compare(local, same, "smoke") == ([], 2)
    problems, _ = compare_results.compare(local, other, "smoke")
    assert len(problems) == 1 and problems[0].startswith("tidy/suite.csv:")


def test_compare_results_flags_a_missing_file(tmp_path):
    local = _results(tmp_path / "local", value=1.5, speed=100.0)
    missing = _results(tmp_path / "missing", value=1.5, speed=100.0)
    (missing / "results" / "smoke" / "provenance.csv").unlink()
    problems, _ = compare_results.compare(local, missing, "smoke")
    assert problems == ["files under results/smoke differ: ['provenance.csv']"]
