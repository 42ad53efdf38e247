import json

import pandas as pd

from analysis import claims, report, tidy


def _run(run_dir, algo, seed, q_errors, status="complete", wall_time_s=1800.0, cpu_time_s=None):
    steps = list(range(0, 100 * len(q_errors), 100))
    metrics = pd.DataFrame({"run_id": run_dir.name, "suite": "tabular", "algo": algo, "env": "toy/chain-v0",
                            "protocol": "exact", "seed": seed, "step": steps, "frames": steps, "episodes": 0,
                            "metric": "q_error_max", "value": q_errors})
    run_dir.mkdir(parents=True)
    metrics.to_csv(run_dir / "metrics.csv", index=False)
    info = {"run_id": run_dir.name, "status": status, "git": {"commit": "abc123"},
            "config": {"run": {"suite": "tabular"}}}
    if wall_time_s is not None:
        info["wall_time_s"] = wall_time_s
    if cpu_time_s is not None:
        info["cpu_time_s"] = cpu_time_s
    (run_dir / "run.json").write_text(json.dumps(info))
    return run_dir


def _verdicts_and_info(tmp_path, scale="smoke"):
    dirs = [_run(tmp_path / f"q{seed}", "q_learning", seed, [5.0, 0.5, 0.001 * (seed + 1)]) for seed in range(3)]
    dirs.append(_run(tmp_path / "crashed", "fitted_q", 0, [5.0], status="failed", wall_time_s=None))
    tabular = [c for c in claims.load_claims() if c.suite == "tabular"]
    verdicts = claims.evaluate_all(tabular, tidy.load_runs(dirs), scale, reps=200, power_sims=20)
    return verdicts, tidy.run_info(dirs)


def test_smoke_report_carries_the_plumbing_only_banner_and_each_claims_numbers(tmp_path):
    verdicts, info = _verdicts_and_info(tmp_path)
    text = report.render_report(verdicts, info, "smoke")
    assert text.startswith("# qrepro report: smoke scale\n\n" + report.SMOKE_BANNER)
    assert ("2 verdicts on 2 claims (a claim judged per task, noise model or family has one per scope): "
            "1 reproduced, 0 contradicted, 0 inconclusive, 1 not run (suites: tabular).") in text
    assert "### tabular_q_learning_converges [env=toy/chain-v0]: reproduced" in text
    assert "- runs: 3 (q_learning: 3 runs x 1 tasks)" in text
    assert "![tabular_q_learning_converges](figures/tabular.png)" in text
    # The failed fitted-Q run gives no score: its claim is not run (no evidence either way) and shows no figure.
    assert "### tabular_fitted_q_converges [env=toy/chain-v0]: not run" in text
    assert "- why: no runs of fitted_q" in text
    assert "![tabular_fitted_q_converges]" not in text


def test_report_counts_compute_spent_over_every_run_including_failed_ones(tmp_path):
    verdicts, info = _verdicts_and_info(tmp_path)
    text = report.render_report(verdicts, info, "smoke")
    assert "4 runs (3 complete, 0 diverged, 1 failed, by run status); compute spent 1.50 h of wall time" in text
    assert "a lower bound: 1 of the runs recorded no wall time." in text
    assert "| total | 4 | 3 | 0 | 1 | 1 | 1.50 h |" in text
    assert "Training code: abc123. Analysis code: unknown." in text
    assert "Every run was trained from a clean checkout." in text
    spent_line = next(line for line in text.splitlines() if "compute spent" in line)
    assert "CPU time" not in spent_line  # no run records it


def test_report_sums_cpu_time_over_the_runs_that_record_it_beside_wall_time(tmp_path):
    dirs = [_run(tmp_path / "a", "q_learning", 0, [1.0], wall_time_s=7200.0, cpu_time_s=3600.0),
            _run(tmp_path / "b", "q_learning", 1, [1.0], wall_time_s=3600.0, cpu_time_s=1800.0),
            _run(tmp_path / "old", "q_learning", 2, [1.0], wall_time_s=1800.0)]  # trained before cpu_time_s
    info = tidy.run_info(dirs)
    spent = report.compute_spent(info).set_index("suite")
    assert spent.loc["total", "cpu_time_s"] == 5400.0 and spent.loc["total", "with_cpu_time"] == 2
    verdicts = claims.evaluate_all([c for c in claims.load_claims() if c.suite == "tabular"],
                                   tidy.load_runs(dirs), "smoke", reps=200, power_sims=20)
    text = report.render_report(verdicts, info, "smoke")
    assert ("compute spent 3.50 h of wall time (sum over run.json); CPU time 1.50 h over the 2 runs that record "
            "it.") in text
    assert "| total | 3 | 3 | 0 | 0 | 0 | 3.50 h | 1.50 h (2) |" in text


def test_report_flags_dirty_checkouts_names_the_analysis_commit_and_counts_diverged_members(tmp_path):
    verdicts, info = _verdicts_and_info(tmp_path)
    info = info.assign(git_dirty=[False, True, False, False])
    # CartPole, gamma 0.99: |Q| can be at most 100; seed 1 reached 1e8, seed 0 stayed at 90.
    df = pd.DataFrame({"run_id": "r", "suite": "sensitivity", "algo": "dqn", "env": "CartPole-v1", "seed": [0, 1],
                       "metric": "q_estimate", "value": [90.0, 1e8]})
    members = tidy.diverged_members(df, pd.DataFrame({"run_id": ["r"], "gamma": [0.99], "clip_rewards": [False]}))
    text = report.render_report(verdicts, info, "smoke", members=members, analysis_commit="def456")
    assert "**Dirty checkout**: 1 run(s) were trained from a checkout with uncommitted changes" in text
    assert str(tmp_path / "q1") in text and "Analysis code: def456." in text
    assert "Diverged members (seeds) by magnitude: 1 of 2 members" in text
    assert "| r | 1 | 1e+08 | 200 |" in text


def test_only_smoke_reports_disclaim_replication(tmp_path):
    verdicts, info = _verdicts_and_info(tmp_path, scale="paper")
    paper = report.render_report(verdicts, info, "paper")
    assert report.SMOKE_BANNER not in paper and report.QUICK_NOTE not in paper
    assert report.QUICK_NOTE in report.render_report(verdicts, info, "quick")


def test_write_report_writes_the_text_atomically(tmp_path):
    path = report.write_report("# r\n", tmp_path / "results" / "smoke" / "report.md")
    assert path.read_text() == "# r\n"
    assert [p.name for p in path.parent.iterdir()] == ["report.md"]


def test_report_says_which_protocol_each_published_number_was_measured_under(tmp_path):
    verdicts, info = _verdicts_and_info(tmp_path)
    text = report.render_report(verdicts, info, "quick")
    section = text.split("## Published numbers and their protocols", 1)[1].split("\n## ", 1)[0]
    assert "Mnih et al. 2015, Extended Data Table 2" in section and "18,000 frames" in section
    assert "van Hasselt et al. 2016, Table 1" in section and "no_op rows only" in section
    assert "Gu et al. 2016, Table 1" in section and "Young & Tian 2019" in section
    assert "No published number here was measured under machado" in section


def test_each_claim_says_how_its_budget_compares_with_the_published_one(tmp_path):
    verdicts, info = _verdicts_and_info(tmp_path)
    verdicts["published_budget"] = ["a paper, Sec. 4: 600 agent steps", ""]
    verdicts["budget_fraction"] = [0.5, float("nan")]
    text = report.render_report(verdicts, info, "quick")
    assert ("- budget: ours 200 agent steps per run (3 runs); published a paper, Sec. 4: 600 agent steps; ours is "
            "50.0% of it") in text
    assert "- budget: ours no runs; published none stated by the source" in text


def test_a_claim_not_run_gives_its_counterparts_verdicts_scope_by_scope(tmp_path):
    verdicts, info = _verdicts_and_info(tmp_path)
    # q_learning's claim stands in for a MinAtar claim; fitted_q's (no runs) for the Atari claim pointing to it
    verdicts.loc[verdicts["claim_id"] == "tabular_fitted_q_converges", "counterpart"] = "tabular_q_learning_converges"
    verdicts.loc[verdicts["claim_id"] == "tabular_q_learning_converges", "suite"] = "cheap"
    text = report.render_report(verdicts, info, "quick")
    assert ("1 not run (suites: tabular; 1 of them name a counterpart claim on a cheaper testbed, whose verdicts "
            "their sections give)") in text
    section = text.split("### tabular_fitted_q_converges", 1)[1].split("\n### ", 1)[0]
    assert ("- counterpart: tabular_q_learning_converges, the same published result on another testbed (cheap "
            "suite; test mean (q_learning)): 1 reproduced of 1 scopes; its own section gives its budget") in section
    estimate = report._estimate(verdicts.iloc[0])
    assert f"  - env=toy/chain-v0: reproduced, {estimate} (3 runs)" in section
    other = text.split("### tabular_q_learning_converges", 1)[1].split("\n### ", 1)[0]
    assert "- counterpart" not in other
    verdicts.loc[verdicts["claim_id"] == "tabular_fitted_q_converges", "counterpart"] = "gone"
    assert "- counterpart: gone (not in this report)" in report.render_report(verdicts, info, "quick")
