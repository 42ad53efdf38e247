# qrepro: regenerate every figure, result table and claim verdict of DESIGN.md from runs over many seeds.
#
#   snakemake --cores all                                   smoke scale (the default): minutes, plumbing only
#   snakemake --cores all --config scale=quick              reduced budgets that still test each claim
#   snakemake --profile experiments/profiles/slurm --config scale=paper     published budgets on a cluster
#   snakemake --report results/smoke/report.html            browsable HTML report of the figures and tables
#
# docs/workflow.md describes the scales, what each costs, the file layout and the profiles.

import os
import sys
from pathlib import Path

REPO = Path(workflow.basedir)
# Jobs and start-up checks import this checkout's code, whatever Python environment runs them (an installed
# qrepro, a conda environment from experiments/conda/, or a cluster node).
sys.path.insert(0, str(REPO))
os.environ.update(PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))


configfile: str(REPO / "config" / "config.yaml")


include: "experiments/rules/common.smk"


validate_config(config)
SCALE = config["scale"]
SUITES = load_suites(config)
JOBS = job_table(SUITES)
FIGURES = outputs_by_name(SUITES, "figures")
TABLES = outputs_by_name(SUITES, "tables")


wildcard_constraints:
    scale="|".join(SCALES),
    suite=wildcard_choices({*SUITES, *(j["suite"] for j in JOBS.values())}),
    label=r"[a-z][a-z0-9_.-]*",
    env=r"[A-Za-z0-9_.-]+",
    figure=wildcard_choices(FIGURES),
    table=wildcard_choices(TABLES),


include: "experiments/rules/train.smk"
include: "experiments/rules/analysis.smk"
include: "experiments/rules/report.smk"


rule all:
    input:
        final_targets(SCALE),
    default_target: True
    localrule: True
