import pandas as pd
import pytest

from analysis import tables

REPS = 200  # bootstrap replications: enough to exercise the intervals, cheap on 2 CPU cores


def _tidy(values, algos=("dqn", "double_dqn"), envs=("ALE/Pong-v5", "ALE/Breakout-v5"), steps=(0, 100),
          suite="atari_aggregate", episodes=None):
    """values(algo, env, seed, step) -> value, for seeds 0..2; protocol nature, 4 frames per agent step."""
    rows = [{"run_id": "r", "suite": suite, "algo": algo, "env": env, "protocol": "nature", "seed": seed,
             "step": step, "frames": 4 * step, "episodes": (episodes or (lambda s: s // 10))(step),
             "metric": "eval_return", "value": values(algo, env, seed, step), "status": "complete"}
            for algo in algos for env in envs for seed in range(3) for step in steps]
    return pd.DataFrame(rows)


def test_result_table_gives_mean_and_iqm_with_cis_runs_budget_and_the_published_dqn_score():
    df = _tidy(lambda a, e, seed, step: float(seed) if step else -99.0)
    table = tables.result_table(df, reps=REPS)
    dqn_pong = table[(table["algo"] == "dqn") & (table["env"] == "ALE/Pong-v5")].iloc[0]
    assert dqn_pong["mean"] == 1.0 and dqn_pong["iqm"] == 1.0  # final evals 0, 1, 2
    assert dqn_pong["mean_ci_low"] <= 1.0 <= dqn_pong["mean_ci_high"]
    assert (dqn_pong["n_runs"], dqn_pong["agent_steps"], dqn_pong["frames"]) == (3, 100, 400)
    assert dqn_pong["protocol"] == "nature"
    assert dqn_pong["published"] == 18.9 and dqn_pong["published_source"].startswith("Mnih et al. 2015")
    double = table[table["algo"] == "double_dqn"]
    assert double["published"].isna().all() and (double["published_source"] == "").all()


def test_result_table_counts_the_members_the_runner_stopped_and_scores_them_on_what_they_logged_before():
    """A member stopped for a non-finite loss logs a diverged row and nothing after it: it stays in the table,
    scored on its own last evaluations, and n_diverged says how many such members a row holds."""
    df = _tidy(lambda a, e, seed, step: seed + step / 100, algos=("naf",), envs=("HalfCheetah-v5",),
               steps=(0, 50, 100))
    df = df[~((df["seed"] == 2) & (df["step"] == 100))]  # seed 2 stopped between its evaluations at 50 and 100
    stop = df[(df["seed"] == 2) & (df["step"] == 50)].assign(step=60, frames=240, metric="diverged", value=1.0)
    table = tables.result_table(pd.concat([df, stop]), reps=REPS).iloc[0]
    assert (table["n_runs"], table["n_diverged"], table["agent_steps"]) == (3, 1, 100)
    # seeds 0 and 1 score 1 and 2 at step 100; seed 2 scores 2.5, its own last evaluation (step 50), not dropped
    assert table["mean"] == pytest.approx((1 + 2 + 2.5) / 3)
    healthy = tables.result_table(df[df["seed"] < 2], reps=REPS).iloc[0]
    assert healthy["n_diverged"] == 0


def test_result_table_puts_young_and_tian_s_dqn_curve_beside_dqn_on_minatar_only_at_the_same_frame_count():
    envs = ("MinAtar/Breakout-v0", "MinAtar/Asterix-v0")
    at_100k = _tidy(lambda a, e, seed, step: float(seed), envs=envs, steps=(0, 25_000))  # 100k frames
    table = tables.result_table(at_100k, reps=REPS).set_index(["algo", "env"])
    breakout = table.loc[("dqn", "MinAtar/Breakout-v0")]
    assert breakout["frames"] == 100_000 and breakout["published"] == 4.47  # the curve's reading at 100k
    assert breakout["published_source"].startswith("Young & Tian 2019")
    # other curves hide DQN's at 100k frames on Asterix: no number is guessed
    assert pd.isna(table.loc[("dqn", "MinAtar/Asterix-v0"), "published"])
    assert table.loc[("double_dqn", "MinAtar/Breakout-v0"), "published_source"] == ""
    at_80k = tables.result_table(_tidy(lambda a, e, seed, step: 1.0, envs=envs, steps=(0, 20_000)), reps=REPS)
    assert at_80k["published"].isna().all()


def test_human_normalized_result_table_normalizes_the_published_score_with_the_same_table():
    df = _tidy(lambda a, e, seed, step: 14.6, algos=("dqn",), envs=("ALE/Pong-v5",))
    row = tables.result_table(df, human_table="dqn_zoo", reps=REPS).iloc[0]
    assert row["mean"] == pytest.approx(1.0) and row["human_table"] == "dqn_zoo"
    # Mnih et al. 2015 DQN on Pong, 18.9, against DQN Zoo's random -20.7 and human 14.6.
    assert row["published"] == pytest.approx((18.9 + 20.7) / (14.6 + 20.7))


def test_aggregate_table_puts_van_hasselt_summary_beside_dqn_and_double_dqn():
    # Human scores in DQN Zoo's table: Pong 14.6, Breakout 30.5.
    df = _tidy(lambda a, e, seed, step: 14.6 if e == "ALE/Pong-v5" else 30.5,
               algos=("dqn", "double_dqn", "per_dqn"))
    table = tables.aggregate_table(df, reps=REPS).set_index("algo")
    assert table.loc["dqn", "iqm"] == pytest.approx(1.0)  # human level on both games
    assert table.loc["dqn", "optimality_gap"] == pytest.approx(0.0)
    assert (table.loc["dqn", "n_runs"], table.loc["dqn", "n_tasks"]) == (3, 2)
    # van Hasselt et al. 2016 Table 1, no-op starts: DQN median 93.5%, Double DQN mean 330.3%.
    assert table.loc["dqn", "published_median"] == pytest.approx(0.935)
    assert table.loc["double_dqn", "published_mean"] == pytest.approx(3.303)
    assert pd.isna(table.loc["per_dqn", "published_median"])
    assert table.loc["per_dqn", "published_source"] == ""


def test_naf_vs_ddpg_table_reports_best_return_and_episodes_to_within_5_percent_beside_gu_table1():
    # Returns climb -4, -2, -1.02, -1.0 at steps 0..300; 1 episode per 10 steps: within 5% of -1 at step 200.
    curve = {0: -4.0, 100: -2.0, 200: -1.02, 300: -1.0}
    df = _tidy(lambda a, e, seed, step: curve[step], algos=("ddpg", "naf"), envs=("Reacher-v5", "Hopper-v5"),
               steps=tuple(curve), suite="naf_vs_ddpg")
    table = tables.naf_vs_ddpg_table(df, reps=REPS).set_index(["env", "algo"])
    naf = table.loc[("Reacher-v5", "naf")]
    assert naf["best"] == -1.0 and naf["episodes_to_within"] == 20
    assert naf["best_ci_low"] == naf["best_ci_high"] == -1.0
    assert (naf["n_runs"], naf["agent_steps"], naf["frames"]) == (3, 300, 1200)
    # Gu et al. 2016, Table 1, Reacher: NAF -0.331 in 1260 episodes, on the paper's own task.
    published = (naf["published_domain"], naf["published_best"], naf["published_episodes"])
    assert published == ("Reacher", -0.331, 1260)
    assert "Gu, Lillicrap" in naf["published_source"]
    hopper = table.loc[("Hopper-v5", "ddpg")]
    assert hopper["published_domain"] == "" and pd.isna(hopper["published_best"])


def _small_table():
    return pd.DataFrame({"algo": ["double_dqn", "dqn"], "iqm": [1.23456, 0.5], "iqm_ci_low": [1.0, 0.25],
                         "iqm_ci_high": [1.5, 0.75], "agent_steps": [100_000] * 2, "frames": [400_000] * 2,
                         "published": [float("nan"), 12345.6], "published_source": ["", "Mnih & al. 2015"]})


def test_markdown_merges_each_ci_into_brackets_and_numbers_the_sources():
    text = tables.to_markdown(_small_table())
    lines = text.splitlines()
    assert lines[0] == "| algo | iqm | agent_steps | frames | published | source |"
    # Three significant digits throughout, trailing zeros kept: one precision per column.
    assert lines[2] == "| double_dqn | 1.23 [1.00, 1.50] | 100000 | 400000 |  |  |"
    assert lines[3] == "| dqn | 0.500 [0.250, 0.750] | 100000 | 400000 | 12346 | [1] |"
    assert lines[-1] == "- [1] Mnih & al. 2015"


def test_cells_leave_out_empty_columns_missing_intervals_and_the_width_of_exact_values():
    table = pd.DataFrame({"algo": ["a", "b"], "x": [0.25, float("nan")], "x_ci_low": [0.25, float("nan")],
                          "x_ci_high": [0.25, float("nan")], "human_table": ["", ""]})
    shown, _ = tables.format_table(table)
    assert list(shown.columns) == ["algo", "x"]
    assert shown["x"].tolist() == ["0.250", ""]  # exact: no "[0.250, 0.250]"; missing: no "[, ]"


def test_latex_escapes_specials_and_keeps_the_sources_under_the_tabular():
    text = tables.to_latex(_small_table(), caption="Scores -> ranks, p < 0.05", label="tab:x", notes=["n runs"])
    assert text.startswith("\\begin{table}[ht]\n\\centering\n\\footnotesize\n"
                           "\\caption{Scores $\\to$ ranks, p $<$ 0.05}\n\\label{tab:x}\n"
                           "\\begin{tabular}{llllll}\n\\hline\nalgo & iqm & agent\\_steps")
    assert "double\\_dqn & 1.23 [1.00, 1.50] & 100000 & 400000 &  &  \\\\" in text
    assert text.rstrip().endswith("\\end{tabular}\n\\par n runs\n\\par [1] Mnih \\& al. 2015\n\\end{table}")


def _latex_rule_violations(tex: str) -> list[str]:
    """Fixed rules a table must meet to compile in a plain article: balanced braces, no package commands,
    as many cells in every row as columns, no raw < > | (they print as other glyphs in OT1)."""
    problems = []
    if tex.count("{") - tex.count("\\{") != tex.count("}") - tex.count("\\}"):
        problems.append("unbalanced braces")
    for command in ("\\toprule", "\\midrule", "\\bottomrule", "\\usepackage"):
        if command in tex:
            problems.append(f"needs a package: {command}")
    columns = len(tex.split("\\begin{tabular}{")[1].split("}")[0])
    for line in tex.splitlines():
        if line.endswith("\\\\") and line.count(" & ") + 1 != columns:
            problems.append(f"row with {line.count(' & ') + 1} cells, not {columns}: {line}")
        bare = line.replace("$<$", "").replace("$>$", "").replace("$|$", "")
        if any(ch in bare for ch in "<>|"):
            problems.append(f"raw < > or | in: {line}")
    return problems


def test_latex_tables_compile_in_a_plain_document(tmp_path):
    """The rules always; a real build where a TeX engine is installed (apt: texlive-latex-base)."""
    import shutil
    import subprocess

    table = _small_table().assign(algo=["a -> b", "c < d | e > f"])
    tex = tables.to_latex(table, caption="Caption with 5% and_underscore", label="tab:t", notes=["Method: x."])
    assert _latex_rule_violations(tex) == []
    assert _latex_rule_violations(tex.replace("$<$", "<")) != []
    if shutil.which("pdflatex") is None:
        pytest.skip("no pdflatex here; the fixed rules above stand in for a build")
    (tmp_path / "t.tex").write_text("\\documentclass{article}\n\\begin{document}\n" + tex + "\\end{document}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]
    assert (tmp_path / "t.pdf").exists()


def test_write_table_formats_writes_full_precision_csv_markdown_and_latex(tmp_path):
    csv, md, tex = tables.write_table_formats(_small_table(), tmp_path / "table1")
    # CSV cannot tell an empty string from a missing value.
    pd.testing.assert_frame_equal(pd.read_csv(csv).fillna({"published_source": ""}), _small_table())
    assert md.read_text() == tables.to_markdown(_small_table())
    assert tex.read_text() == tables.to_latex(_small_table(), label="tab:table1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table1.csv", "table1.md", "table1.tex"]


def test_swept_values_sort_as_numbers_and_fqi_iterations_are_not_called_agent_steps():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "scripts" / "table.py"
    spec = importlib.util.spec_from_file_location("table_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script._sorted_values([1024, 128, 16, 2]) == [2, 16, 128, 1024]
    assert script._sorted_values(["mse", "huber"]) == ["huber", "mse"]
    df = _tidy(lambda a, e, seed, step: 1.0, algos=("fitted_q", "q_learning"), envs=("toy/chain-v0",))
    table = tables.result_table(df, reps=REPS, step_units={"fitted_q": "FQI iterations"}).set_index("algo")
    assert "agent_steps" not in table.columns
    assert table.loc["fitted_q", "step_unit"] == "FQI iterations" and pd.isna(table.loc["fitted_q", "frames"])
    assert (table.loc["q_learning", "step_unit"], table.loc["q_learning", "frames"]) == ("agent steps", 400)
    # a swept setting left empty by some runs is a float column: its whole values still print whole
    swept = pd.concat([df.assign(target_period=50.0), df.assign(algo="other", target_period=float("nan"))])
    by_value = script.by_value_table(swept, REPS, columns=["target_period"])
    assert tables.to_markdown(by_value).count("| target_period | 50 |") == 2


def test_a_tables_compute_note_sums_every_run_and_names_each_suite_that_trained_them():
    from experiments.scripts.table import compute_note

    # minatar_variants reuses overestimation_minatar's DQN runs: both suites are named, with their run counts
    provenance = pd.DataFrame({"suite": ["overestimation_minatar", "minatar_variants", "minatar_variants"],
                               "wall_time_s": [3600.0, 1800.0, 1800.0], "cpu_time_s": [None, 1200.0, 2400.0]})
    assert compute_note(provenance) == (
        "Compute: 2.00 h of wall time (1.00 h of CPU time over the 2 that record it) over 3 run(s): "
        "2 of suite minatar_variants, 1 of suite overestimation_minatar.")
    assert compute_note(provenance.iloc[:0]) == "Compute: no runs."
