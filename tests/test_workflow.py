"""The Snakemake workflow: validation at start-up, the plans it makes (locally and for SLURM), lint, the
synthetic overestimation script, and the whole smoke workflow end to end (train -> tables -> figures ->
report) in a temporary working directory, so the checkout stays clean."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SUITE_DIR = REPO / "experiments" / "suites"
SCRIPTS = REPO / "experiments" / "scripts"
SUITE_IDS = ("overestimation", "overestimation_synthetic", "naf_vs_ddpg", "imagination", "continuous_max",
             "sensitivity", "atari_aggregate", "tabular", "overestimation_minatar", "minatar_variants")


def snakemake(*args: str, workdir: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run Snakemake on the repository's Snakefile; with ``workdir`` every output goes there instead."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    if workdir is not None:
        command += ["--directory", str(workdir)]
    return subprocess.run([*command, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def load_suite(suite_id: str) -> dict:
    return yaml.safe_load((SUITE_DIR / f"{suite_id}.yaml").read_text())


def script_module(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module




# --- declarations -------------------------------------------------------------------------------------------

def test_every_design_suite_has_one_suite_file_named_by_its_id():
    files = sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))
    assert files == sorted(SUITE_IDS)
    for suite_id in SUITE_IDS:
        assert load_suite(suite_id)["suite"] == suite_id


def test_quick_scale_has_at_least_five_seeds_and_smoke_stays_tiny():
    for suite_id in SUITE_IDS:
        scales = load_suite(suite_id)["scales"]
        assert scales["quick"]["seeds"] >= 5, suite_id
        smoke = scales["smoke"]
        assert smoke["seeds"] <= 2 and len(smoke["envs"]) <= 3, suite_id
        assert smoke.get("steps", 0) <= 2_000 and smoke["resources"]["gpu"] == 0, suite_id


def test_every_claim_names_a_declared_suite_and_figure():
    from analysis.claims import load_claims

    figures = {f"figures/{f['name']}" for s in SUITE_IDS for f in load_suite(s)["figures"]}
    for claim in load_claims():
        assert claim.suite in SUITE_IDS, claim.id
        assert claim.figure in figures, f"{claim.id}: {claim.figure} is not declared by any suite"


# Plots that draw analysis.figures.learning_curves' summary: the mean over seeds with its 95% bootstrap CI (the
# van Hasselt Fig. 3 form, overestimation_curves, keeps the paper's median and 10-90% band).
MEAN_CI_PLOTS = ("learning_curves", "naf_vs_ddpg_curves", "imagination_curves", "tabular_convergence")


def test_every_learning_curve_caption_names_the_summary_the_figure_draws():
    for suite_id in SUITE_IDS:
        for figure in load_suite(suite_id)["figures"]:
            caption = " ".join(figure["caption"].split())
            if figure["plot"] in MEAN_CI_PLOTS:
                assert "mean over seeds" in caption and "95%" in caption, (suite_id, figure["name"], caption)
                assert "median" not in caption and "10-90%" not in caption, (suite_id, figure["name"], caption)


def test_every_plot_and_table_kind_of_the_schema_has_a_function():
    schema = json.loads((REPO / "experiments" / "schemas" / "suite.schema.json").read_text())
    plots = schema["$defs"]["figure"]["properties"]["plot"]["enum"]
    kinds = schema["$defs"]["table"]["properties"]["table"]["enum"]
    assert sorted(script_module("figure").PLOTS) == sorted(plots)
    assert sorted(script_module("table").TABLES) == sorted(kinds)


# --- validation at start-up ---------------------------------------------------------------------------------

def test_invalid_scale_fails_at_start_naming_the_key_and_valid_choices():
    result = snakemake("-n", "--config", "scale=huge")
    assert result.returncode != 0
    assert "config key scale: 'huge' is not one of ['smoke', 'quick', 'paper']" in output(result)


def test_unknown_config_key_fails_at_start_naming_it_and_the_valid_keys():
    result = snakemake("-n", "--config", "sclae=quick")
    assert result.returncode != 0
    text = output(result)
    assert "'sclae' was unexpected" in text and "valid keys: bootstrap_reps, device, scale" in text


def test_unknown_suite_in_config_fails_naming_the_valid_suites():
    result = snakemake("-n", "--config", "suites=[tabular,atari]")
    assert result.returncode != 0
    assert "config key suites.1: 'atari' is not one of" in output(result)


def _broken_suite(tmp_path: Path, edit, suite_id: str = "tabular") -> Path:
    suite_dir = tmp_path / "suites"
    shutil.copytree(SUITE_DIR, suite_dir)
    path = suite_dir / f"{suite_id}.yaml"
    suite = yaml.safe_load(path.read_text())
    edit(suite)
    path.write_text(yaml.safe_dump(suite))
    return suite_dir


def test_invalid_suite_value_fails_at_start_naming_the_file_and_key(tmp_path):
    suite_dir = _broken_suite(tmp_path, lambda s: s["scales"]["quick"].update(seeds=0))
    result = snakemake("-n", "--config", f"suite_dir={suite_dir}", "suites=[tabular]")
    assert result.returncode != 0
    text = output(result)
    assert "tabular.yaml" in text and "key scales.quick.seeds: 0 is less than the minimum of 1" in text


def test_unknown_algorithm_in_a_suite_fails_at_start_naming_it_and_the_valid_ones(tmp_path):
    suite_dir = _broken_suite(tmp_path, lambda s: s["runs"][0].update(label="q_learning", algo="q_learnin"))
    result = snakemake("-n", "--config", f"suite_dir={suite_dir}", "suites=[tabular]")
    assert result.returncode != 0
    text = output(result)
    assert "unknown algo 'q_learnin'; valid:" in text and "q_learning" in text


def test_unknown_set_key_in_a_suite_fails_at_start_naming_it(tmp_path):
    suite_dir = _broken_suite(tmp_path, lambda s: s["scales"]["paper"].update(set={"eval_evry": 10}))
    result = snakemake("-n", "--config", f"suite_dir={suite_dir}", "suites=[tabular]")
    assert result.returncode != 0
    text = output(result)
    assert "key scales.paper" in text and "--set eval_evry: unknown key" in text


def test_a_sweep_of_a_setting_the_algorithm_lacks_fails_at_start_naming_it(tmp_path):
    suite_dir = _broken_suite(tmp_path, lambda s: s["runs"][0].update(sweeps=["replay_sise"]), "sensitivity")
    result = snakemake("-n", "--config", f"suite_dir={suite_dir}", "suites=[sensitivity]")
    assert result.returncode != 0
    assert "sweeps ['replay_sise'] are not settings of dqn; valid:" in output(result)


# --- plans --------------------------------------------------------------------------------------------------

def _train_jobs(text: str) -> list[str]:
    return [block for block in re.split(r"\n(?=\[[^\]]+\]\n)", text) if re.search(r"^rule train:", block, re.M)]


def test_dry_run_plans_one_job_per_run_label_and_env_with_every_seed_a_member():
    result = snakemake("-n", "-p", "--config", "suites=[tabular,sensitivity]")
    assert result.returncode == 0, output(result)
    jobs = _train_jobs(result.stdout)
    expected = sum(len(load_suite(s)["scales"]["smoke"].get("runs", load_suite(s)["runs"]))
                   * len(load_suite(s)["scales"]["smoke"]["envs"]) for s in ("tabular", "sensitivity"))
    assert len(jobs) == expected
    assert all("--seeds 0 1 " in job for job in jobs)
    assert "output: runs/smoke/tabular/q_learning/toy-chain-v0/run.json" in result.stdout
    assert "results/smoke/report.md" in result.stdout


def test_a_reused_run_is_trained_once_in_the_suite_that_trains_it_even_when_that_suite_is_not_selected():
    reused = load_suite("minatar_variants")["scales"]["smoke"]["reuse"]
    assert reused == {"dqn": "overestimation_minatar", "double_dqn": "overestimation_minatar"}
    for suites in ("[overestimation_minatar,minatar_variants]", "[minatar_variants]"):
        result = snakemake("-n", "-p", "--config", f"suites={suites}")
        assert result.returncode == 0, output(result)
        jobs = _train_jobs(result.stdout)
        assert len(jobs) == 5, jobs  # dqn and double_dqn in overestimation_minatar; dueling, per, n-step here
        for algo in reused:
            assert f"output: runs/smoke/overestimation_minatar/{algo}/MinAtar-Breakout-v0/run.json" in result.stdout
            assert f"runs/smoke/minatar_variants/{algo}/" not in result.stdout
        assert "output: runs/smoke/minatar_variants/nstep_dqn/MinAtar-Breakout-v0/run.json" in result.stdout


def test_a_reused_run_that_is_not_the_same_run_fails_at_start_naming_what_differs(tmp_path):
    def edit(suite):
        suite["runs"][0]["set"] = {"lr": 0.001}
    suite_dir = _broken_suite(tmp_path, edit, "minatar_variants")
    result = snakemake("-n", "--config", "suites=[minatar_variants]", f"suite_dir={suite_dir}")
    assert result.returncode != 0
    assert "key scales.smoke.reuse.dqn: 'overestimation_minatar'" in output(result)
    assert "the run differs from the one it reuses (settings:" in output(result) and "'lr': 0.001" in output(result)


def test_a_run_reused_from_a_suite_without_it_fails_at_start_naming_both(tmp_path):
    def edit(suite):
        suite["scales"]["smoke"]["reuse"]["dqn"] = "tabular"
    suite_dir = _broken_suite(tmp_path, edit, "minatar_variants")
    result = snakemake("-n", "--config", "suites=[minatar_variants]", f"suite_dir={suite_dir}")
    assert result.returncode != 0
    assert ("key scales.smoke.reuse.dqn: 'tabular': that suite trains no run dqn on MinAtar/Breakout-v0"
            in output(result))


def test_slurm_profile_plans_training_jobs_with_their_resources():
    result = snakemake("-n", "--profile", "experiments/profiles/slurm", "--config", "scale=quick",
                       "slurm_partition_gpu=gpu")
    assert result.returncode == 0, output(result)
    jobs = _train_jobs(result.stdout)
    assert jobs
    for job in jobs:
        resources = re.search(r"resources: (.*)", job).group(1)
        for name in ("cpus_per_task=", "mem_mb=", "runtime="):
            assert name in resources, job
        suite = re.search(r"suite=(\w+)", job).group(1)
        if load_suite(suite)["scales"]["quick"]["resources"]["gpu"]:
            assert "gpu=1" in resources and "slurm_partition=gpu" in resources and "--device auto" in job
        else:
            assert "gpu=0" in resources and "--device cpu" in job
    assert any("suite=atari_aggregate" in job and "gpu=1" in job for job in jobs)


def test_cpu_only_config_requests_no_gpu():
    result = snakemake("-n", "--config", "scale=quick", "device=cpu", "suites=[atari_aggregate]")
    assert result.returncode == 0, output(result)
    jobs = _train_jobs(result.stdout)
    assert jobs and all("gpu=0" in job for job in jobs)


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, output(result)
    assert "Congratulations, your workflow is in a good condition!" in output(result)


# --- the synthetic suite's script ---------------------------------------------------------------------------

def test_synthetic_max_estimator_bias_matches_the_closed_form_and_double_is_unbiased():
    synthetic = script_module("synthetic_overestimation")
    settings = {**synthetic.DEFAULTS, "repetitions": 20_000, "num_actions": [2, 16]}
    rows = synthetic.compute_rows("synthetic/noise-uniform", [0, 1], settings, "test")
    means = rows.groupby(["metric", "algo", "num_actions"])["value"].mean()
    for m in (2, 16):
        # van Hasselt et al. 2016, Theorem 2: E[max] = (m - 1) / (m + 1); Monte Carlo error ~ 0.005 here
        assert means[("exact_bias", "max_estimator", m)] == pytest.approx((m - 1) / (m + 1))
        assert means[("estimation_bias", "max_estimator", m)] == pytest.approx((m - 1) / (m + 1), abs=0.02)
        assert abs(means[("estimation_bias", "double_estimator", m)]) < 0.02


def test_synthetic_normal_exact_bias_matches_the_expected_maximum_of_normals():
    synthetic = script_module("synthetic_overestimation")
    # E[max of 2 standard normals] = 1 / sqrt(pi)
    assert synthetic.exact_max_bias("normal", 2) == pytest.approx(1 / 3.141592653589793**0.5, rel=1e-6)


def test_synthetic_script_writes_a_run_folder_the_analysis_reads(tmp_path):
    from analysis import tidy

    out = tmp_path / "run"
    result = subprocess.run([sys.executable, str(SCRIPTS / "synthetic_overestimation.py"), "--env",
                             "synthetic/fit-sin-deg6", "--seeds", "0", "1", "--out", str(out), "--set",
                             "repetitions=20", "--set", "num_actions=2,4"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = tidy.load_run(out)
    assert set(rows["metric"]) == {"fit_estimation_bias"} and len(rows) == 2 * 2 * 2
    info = tidy.run_info([out]).iloc[0]
    assert info["status"] == "complete" and info["suite"] == "overestimation_synthetic" and info["config_hash"]


def test_synthetic_script_rejects_bad_input_with_exit_2_naming_the_key(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, str(SCRIPTS / "synthetic_overestimation.py"), "--env",
                             "synthetic/noise-normal", "--seeds", "0", "--out", str(out), "--set", "repetitons=5"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert "--set repetitons: unknown key; valid: grid_points, num_actions, repetitions, suite" in result.stderr
    assert not out.exists()


# --- a stopped workflow ---------------------------------------------------------------------------------

# One DQN CartPole run of the sensitivity suite's smoke scale, long enough to stop after its first checkpoint.
STOP_RUN = Path("runs/smoke/sensitivity/dqn/CartPole-v1")
STOP_STEPS = 1_000


def _one_run_suite(tmp_path: Path) -> Path:
    def cut(suite):
        suite["scales"]["smoke"].update(runs=["dqn"], steps=STOP_STEPS, envs=["CartPole-v1"],
                                        set={"learning_starts": 100, "eval_episodes": 2, "eval_period": 250})
    return _broken_suite(tmp_path, cut, "sensitivity")


@pytest.mark.slow
def test_a_workflow_stopped_by_sigterm_plans_the_interrupted_training_again_and_resumes_it(tmp_path):
    """A session's end, Ctrl-C or a pre-emption signals the whole process group: Snakemake and the training job.
    The job checkpoints and may rewrite run.json after Snakemake has removed the outputs of the failed job, so
    the next invocation must not take a run.json that says 'interrupted' for a finished job."""
    suite_dir = _one_run_suite(tmp_path)
    workdir = tmp_path / "work"
    args = ["--cores", "1", "--config", "suites=[sensitivity]", f"suite_dir={suite_dir}", "--",
            str(STOP_RUN / "done")]
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    workflow = subprocess.Popen([*command, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    run_json = workdir / STOP_RUN / "run.json"
    try:
        deadline = time.monotonic() + 180
        while not (run_json.exists() and json.loads(run_json.read_text())["steps_done"] > 0):
            assert workflow.poll() is None and time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.2)
        os.killpg(workflow.pid, signal.SIGTERM)
        stopped = workflow.communicate(timeout=120)[0]
    finally:
        if workflow.poll() is None:
            os.killpg(workflow.pid, signal.SIGKILL)
    assert workflow.returncode != 0, stopped[-3_000:]

    plan = snakemake("-n", *args, workdir=workdir)
    assert re.search(r"^rule train:|^localrule train:", output(plan), re.M), output(plan)[-3_000:]
    resumed = snakemake(*args, workdir=workdir)
    assert resumed.returncode == 0, output(resumed)[-3_000:]
    run = json.loads(run_json.read_text())
    assert run["status"] == "complete" and run["steps_done"] == STOP_STEPS and 0 < run["resumed_from_step"]
    assert "Nothing to be done" in output(snakemake("-n", *args, workdir=workdir))


# --- end to end ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_smoke_workflow_produces_every_declared_figure_table_and_a_report_listing_every_claim(tmp_path):
    from analysis.claims import load_claims

    result = snakemake("--cores", "2", workdir=tmp_path, timeout=1_200)
    assert result.returncode == 0, output(result)[-5_000:]
    results = tmp_path / "results" / "smoke"
    for suite_id in SUITE_IDS:
        suite = load_suite(suite_id)
        for figure in suite["figures"]:
            for ext in ("png", "pdf"):
                assert (results / "figures" / f"{figure['name']}.{ext}").stat().st_size > 0, figure["name"]
        for table in suite["tables"]:
            for ext in ("csv", "md", "tex"):
                assert (results / "tables" / f"{table['name']}.{ext}").stat().st_size > 0, table["name"]
        tidy_table = pd.read_parquet(results / "tidy" / f"{suite_id}.parquet")
        assert set(tidy_table["suite"]) == {suite_id}
    report = (results / "report.md").read_text()
    for claim in load_claims():
        # One section per claim and scope ("### <id> [<scope>]: <verdict>").
        assert f"### {claim.id} [" in report
    # the claims table names each claim's counterpart on a cheaper testbed (empty where it has none)
    verdicts = pd.read_csv(results / "tables" / "claims.csv", keep_default_na=False)
    assert dict(zip(verdicts["claim_id"], verdicts["counterpart"], strict=True)) == \
        {c.id: c.counterpart or "" for c in load_claims()}
    provenance = pd.read_csv(results / "provenance.csv")
    run_folders = sorted(str(p.parent.relative_to(tmp_path)) for p in (tmp_path / "runs").rglob("run.json"))
    assert sorted(provenance["run_dir"]) == run_folders
    assert provenance["config_hash"].notna().all() and (provenance["status"] == "complete").all()
    assert provenance["git_commit"].notna().all() and provenance["version_torch"].notna().all()
    assert (provenance["cpu_time_s"] > 0).all()  # every run records what it cost, training and script alike
    # run folders are not committed: a copy of every run.json travels with the results, under each suite that
    # reads the run (minatar_variants reuses overestimation_minatar's DQN and Double DQN runs)
    copies = sorted(str(p.relative_to(results / "run_json")) for p in (results / "run_json").rglob("run.json"))
    read = [(suite_id, Path(d)) for suite_id in SUITE_IDS
            for d in pd.read_csv(results / "provenance" / f"{suite_id}.csv")["run_dir"]]
    assert copies == sorted(f"{suite_id}/{d.parent.name}/{d.name}/run.json" for suite_id, d in read)
    assert {str(d) for _, d in read} == set(provenance["run_dir"]) and len(read) > len(provenance)

    again = snakemake("-n", workdir=tmp_path)
    assert "Nothing to be done" in output(again), "a finished workflow must be up to date"

    html = tmp_path / "report.html"
    reported = snakemake("--report", str(html), workdir=tmp_path)
    assert reported.returncode == 0, output(reported)[-3_000:]
    assert html.stat().st_size > 0
