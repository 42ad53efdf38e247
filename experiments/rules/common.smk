# Helpers for the qrepro workflow, and nothing else (the rules live in train.smk, analysis.smk, report.smk):
# config and suite validation at start-up, the job table (one job per scale, suite, run label and
# environment, every seed a member of that job), output paths, and the functions the rules call for inputs,
# params and resources. Paths are relative to the working directory; code and suite files are found from
# the Snakefile's folder, REPO.

import importlib.util
import json
import shlex
from pathlib import Path

import jsonschema
import yaml

from experiments.contract import COLUMNS

SCALES = ("smoke", "quick", "paper")
SCHEMA_DIR = REPO / "experiments" / "schemas"
SYNTHETIC_SCRIPT = REPO / "experiments" / "scripts" / "synthetic_overestimation.py"
SYNTHETIC_LABEL = "exact"
# Columns of every tidy row (DESIGN.md, The run contract, plus the run's status): a suite cannot reuse them.
RESERVED_COLUMNS = (*COLUMNS, "status")
CLAIMS_FILE = REPO / "analysis" / "claims.yaml"
# The analysis code is an input of every analysis job, so editing it re-derives every table and figure.
ANALYSIS_CODE = sorted(str(p) for p in (REPO / "analysis").glob("*.py"))
# The published numbers tables, figures and the report print beside ours (analysis/reference.py reads them).
REFERENCE_FILES = sorted(str(p) for p in (REPO / "analysis" / "reference").glob("*.csv"))
# 1,000 replications at smoke scale: its intervals are plumbing, not estimates. None: rliable's defaults.
SMOKE_BOOTSTRAP_REPS = 1_000
# Analysis jobs (collect, figure, table, report) per scale: small, single-threaded.
ANALYSIS_RESOURCES = {
    "smoke": {"mem_mb": 2_000, "runtime": 15},
    "quick": {"mem_mb": 8_000, "runtime": 60},
    "paper": {"mem_mb": 32_000, "runtime": 240},
}


class SuiteError(ValueError):
    """A suite file or config value that cannot run; the message names the file and the key."""


def _key_path(error):
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def schema_errors(instance, schema_name):
    """Every violation of experiments/schemas/<schema_name>, each as "key: message", in key order."""
    schema = json.loads((SCHEMA_DIR / schema_name).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    messages = []
    for error in errors:
        message = error.message
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            message += f"; valid keys: {', '.join(allowed)}" if allowed else ""
        messages.append(f"{_key_path(error)}: {message}")
    return messages


def validate_config(config):
    """Check the config against config.schema.json, filling defaults; raise naming each bad key."""
    schema = json.loads((SCHEMA_DIR / "config.schema.json").read_text())
    for key, spec in schema["properties"].items():
        config.setdefault(key, spec["default"])
    errors = schema_errors(config, "config.schema.json")
    if errors:
        raise SuiteError("invalid config (experiments/schemas/config.schema.json):\n  "
                         + "\n  ".join(f"config key {e}" for e in errors))


def env_slug(env):
    """A folder name for an environment id: ALE/Pong-v5 -> ALE-Pong-v5."""
    return "-".join(env.split("/"))


def _set_value(value):
    """A YAML value as `--set key=value` text: lists comma-separated, booleans lower case."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(_set_value(v) for v in value)
    return str(value)


def _synthetic_module():
    spec = importlib.util.spec_from_file_location("synthetic_overestimation", SYNTHETIC_SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def _steps(spec, label, env):
    """Agent steps of one job: steps_for its run label, else steps_for_env its environment, else steps."""
    if label in spec.get("steps_for", {}):
        return spec["steps_for"][label]
    return spec.get("steps_for_env", {}).get(env, spec.get("steps"))


def _scale_jobs(suite, scale, where):
    """The jobs of one suite at one scale: dicts with everything the train or synthetic rule needs."""
    spec = suite["scales"][scale]
    resources = dict(spec["resources"])
    runs = suite.get("runs", [{"label": SYNTHETIC_LABEL}])
    labels = [r.get("label", r.get("algo")) for r in runs]
    chosen = spec.get("runs", labels)
    for key in ("runs", "steps_for", "set_for", "reuse"):
        unknown = sorted(set(spec.get(key, [])) - set(labels))
        if unknown:
            raise SuiteError(f"{where}.{key}: unknown run labels {unknown}; valid: {', '.join(labels)}")
    unknown = sorted(set(spec.get("steps_for_env", {})) - set(spec["envs"]))
    if unknown:
        raise SuiteError(f"{where}.steps_for_env: environments {unknown} are not in envs; valid: "
                         f"{', '.join(spec['envs'])}")
    if suite["kind"] == "train" and any(_steps(spec, label, env) is None for label in chosen for env in spec["envs"]):
        raise SuiteError(f"{where}.steps: required for a train suite (or steps_for every run, or "
                         "steps_for_env every environment)")
    jobs = []
    for run, label in zip(runs, labels):
        if label not in chosen:
            continue
        settings = {**spec.get("set", {}), **run.get("set", {}), **spec.get("set_for", {}).get(label, {})}
        for env in spec["envs"]:
            jobs.append({
                "scale": scale, "suite": suite["suite"], "kind": suite["kind"], "label": label,
                "algo": run.get("algo", SYNTHETIC_LABEL), "env": env, "slug": env_slug(env),
                "seeds": list(range(spec["seeds"])), "steps": _steps(spec, label, env),
                "settings": settings, "resources": resources, "sweeps": run.get("sweeps", []),
                "tags": run.get("tags", {}),
            })
    return jobs


def _check_jobs(jobs, where):
    """Resolve every job's configuration exactly as its command will, so that a bad algorithm, environment or
    --set key fails here, at start-up, with the code's own message."""
    from experiments.config import ConfigError, build

    synthetic = None
    for job in jobs:
        sets = [f"{k}={_set_value(v)}" for k, v in job["settings"].items()]
        what = f"{where}, run {job['label']} on {job['env']}"
        if job["kind"] == "synthetic":
            synthetic = synthetic or _synthetic_module()
            errors = synthetic.validate(job["env"], job["seeds"], sets)
            if errors:
                raise SuiteError(f"{what}: {'; '.join(errors)}")
            continue
        try:
            resolved = build(job["algo"], job["env"], job["seeds"], job["steps"], sets, "cpu")
        except ConfigError as error:
            raise SuiteError(f"{what}: {error}") from None
        settings = sorted(vars(resolved.algo_config))
        unknown = [key for key in job["sweeps"] if key not in settings]
        if unknown:
            raise SuiteError(f"{what}: sweeps {unknown} are not settings of {job['algo']}; valid: "
                             f"{', '.join(settings)}")


def _shown(path):
    """A path as messages show it: relative to the repository when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def load_suite(path, check_code=True):
    """A suite file, validated against suite.schema.json and, with ``check_code``, against the code
    (algorithms, environments, --set keys) at every scale. Returns the suite with its jobs per scale."""
    where = _shown(path)
    try:
        suite = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SuiteError(f"suite {where}: cannot read it: {error}") from None
    errors = schema_errors(suite, "suite.schema.json")
    if errors:
        raise SuiteError(f"invalid suite {where} (experiments/schemas/suite.schema.json):\n  "
                         + "\n  ".join(f"key {e}" for e in errors))
    if suite["suite"] != path.stem:
        raise SuiteError(f"suite {where}: key suite is {suite['suite']!r} but the file is {path.name}; "
                         "they must agree")
    if (suite["kind"] == "train") != ("runs" in suite):
        raise SuiteError(f"suite {where}: key runs is required for kind train and not allowed for synthetic")
    columns = [c for r in suite.get("runs", []) for c in (*r.get("sweeps", []), *r.get("tags", {}))]
    taken = sorted(set(columns + suite.get("row_columns", [])) & set(RESERVED_COLUMNS))
    if taken:
        raise SuiteError(f"suite {where}: columns {taken} (sweeps, tags or row_columns) would overwrite the "
                         f"run contract's columns: {', '.join(RESERVED_COLUMNS)}")
    labels = [r.get("label", r["algo"]) for r in suite.get("runs", [])]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise SuiteError(f"suite {where}: key runs: duplicate labels {duplicated}; give each run a label")
    suite["jobs"] = {}
    for scale in SCALES:
        jobs = _scale_jobs(suite, scale, f"suite {where}, key scales.{scale}")
        slugs = [(j["label"], j["slug"]) for j in jobs]
        if len(set(slugs)) != len(slugs):
            raise SuiteError(f"suite {where}, key scales.{scale}.envs: two environments share a folder name")
        if check_code:
            _check_jobs(jobs, f"suite {where}, key scales.{scale}")
        suite["jobs"][scale] = jobs
    return suite


def load_suites(config):
    """The selected suites by id, each validated; figure and table names must be unique over all of them."""
    suite_dir = Path(config["suite_dir"])
    suite_dir = suite_dir if suite_dir.is_absolute() else REPO / suite_dir
    suites = {}
    for suite_id in config["suites"]:
        path = suite_dir / f"{suite_id}.yaml"
        if not path.exists():
            raise SuiteError(f"config key suites: no suite file {_shown(path)} for suite {suite_id!r}")
        try:
            suites[suite_id] = load_suite(path)
        except SuiteError as error:
            others = [s for s in config["suites"] if s != suite_id]
            if not others:
                raise
            raise SuiteError(f"{error}\n(to run without this suite: --config suites=[{','.join(others)}])") from None
    for kind in ("figures", "tables"):
        names = [item["name"] for s in suites.values() for item in s[kind]]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise SuiteError(f"key {kind}: names {duplicated} are declared twice across suites")
    known = dict(suites)  # and the unselected suites a reuse key names, each loaded once
    for suite in suites.values():
        _link_reused_runs(suite, known, suite_dir)
    return suites


# What makes two jobs the same run (resources and the suite name recorded in rows do not change a run).
SAME_RUN_KEYS = ("algo", "env", "seeds", "steps", "settings")


def _link_reused_runs(suite, known, suite_dir):
    """A scale's `reuse: {label: suite}` makes that run the other suite's run of the same label, trained once in
    that suite's folders and read by both, so that the same computation is not paid for twice. On every
    environment its settings must resolve to the source's (SAME_RUN_KEYS), else it would not be the same run.
    ``known``: suites by id, to which a source suite loaded from ``suite_dir`` is added."""
    for scale in SCALES:
        jobs = suite["jobs"][scale]
        for label, source_id in suite["scales"][scale].get("reuse", {}).items():
            where = f"suite {suite['suite']}, key scales.{scale}.reuse.{label}: {source_id!r}"
            if source_id == suite["suite"]:
                raise SuiteError(f"{where}: a suite cannot reuse its own runs")
            if source_id not in known:
                path = suite_dir / f"{source_id}.yaml"
                if not path.exists():
                    raise SuiteError(f"{where}: no suite file {_shown(path)}")
                known[source_id] = load_suite(path)
            source = known[source_id]
            theirs = {(j["label"], j["slug"]): j for j in source["jobs"][scale]}
            for i, job in enumerate(jobs):
                if job["label"] != label:
                    continue
                original = theirs.get((label, job["slug"]))
                if original is None or original["suite"] != source_id:
                    raise SuiteError(f"{where}: that suite trains no run {label} on {job['env']} at scale {scale}")
                differ = {k: (job[k], original[k]) for k in SAME_RUN_KEYS if job[k] != original[k]}
                if differ:
                    shown = "; ".join(f"{k}: {mine!r} here, {its!r} there" for k, (mine, its) in differ.items())
                    raise SuiteError(f"{where}: on {job['env']} the run differs from the one it reuses ({shown}); "
                                     "make them equal or train it here (drop the reuse)")
                jobs[i] = {**original, "sweeps": job["sweeps"], "tags": job["tags"]}


def job_table(suites):
    """(scale, suite, label, env slug) -> job, for every scale (so any scale's files can be asked for); a
    reused run is listed under the suite that trains it, whether or not that suite is selected."""
    return {(j["scale"], j["suite"], j["label"], j["slug"]): j
            for s in suites.values() for scale in SCALES for j in s["jobs"][scale]}


def outputs_by_name(suites, kind):
    """Figure or table name -> its spec plus the suite that declares it."""
    return {item["name"]: {**item, "suite": s["suite"]} for s in suites.values() for item in s[kind]}


# --- paths ------------------------------------------------------------------------------------------------

def run_dir(job):
    return f"runs/{job['scale']}/{job['suite']}/{job['label']}/{job['slug']}"


def suite_jobs(scale, suite):
    return SUITES[suite]["jobs"][scale]


def suite_run_files(wildcards):
    jobs = suite_jobs(wildcards.scale, wildcards.suite)
    files = {"run_json": [f"{run_dir(j)}/run.json" for j in jobs],
             "metrics": [f"{run_dir(j)}/metrics.csv" for j in jobs]}
    if SUITES[wildcards.suite]["kind"] == "train":
        # Snakemake reruns a job only for missing outputs that something asks for (train.smk: done)
        files["done"] = [f"{run_dir(j)}/done" for j in jobs]
    return files


def figure_files(scale):
    return [f"results/{scale}/figures/{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")]


def table_files(scale):
    return [f"results/{scale}/tables/{name}.{ext}" for name in TABLES for ext in ("csv", "md", "tex")]


def tidy_files(scale):
    return [f"results/{scale}/tidy/{suite}.{ext}" for suite in SUITES for ext in ("csv", "parquet")]


def final_targets(scale):
    """Everything `snakemake --cores all` makes at one scale."""
    return [*tidy_files(scale), *figure_files(scale), *table_files(scale),
            *(f"results/{scale}/tables/claims.{ext}" for ext in ("csv", "md", "tex")),
            f"results/{scale}/provenance.csv", f"results/{scale}/report.md"]


# --- what the rules call -----------------------------------------------------------------------------------

def job_of(wildcards):
    return JOBS[(wildcards.scale, wildcards.suite, wildcards.label, wildcards.env)]


def device_of(wildcards):
    """auto (the GPU if one is visible) for jobs whose suite asks for a GPU, unless config says cpu."""
    wants_gpu = job_of(wildcards)["resources"]["gpu"] > 0 and config["device"] == "auto"
    return "auto" if wants_gpu else "cpu"


def gpus_of(wildcards):
    return job_of(wildcards)["resources"]["gpu"] if config["device"] == "auto" else 0


def threads_of(wildcards):
    return job_of(wildcards)["resources"]["threads"]


def mem_mb_of(wildcards):
    return job_of(wildcards)["resources"]["mem_mb"]


def runtime_of(wildcards):
    return job_of(wildcards)["resources"]["runtime"]


def partition_of(wildcards):
    return config["slurm_partition_gpu"] if gpus_of(wildcards) else config["slurm_partition_cpu"]


def seeds_arg(wildcards):
    return " ".join(str(s) for s in job_of(wildcards)["seeds"])


def set_args(wildcards):
    """--set pairs of a job: its suite, then the suite's settings for this run and scale (the train rule adds
    the thread count Snakemake grants it)."""
    job = job_of(wildcards)
    settings = {"suite": job["suite"], **job["settings"]}
    return " ".join(f"--set {shlex.quote(f'{k}={_set_value(v)}')}" for k, v in settings.items())


def collect_runs(wildcards):
    """What collect.py needs per run folder: where it is, which settings become columns, constant tags."""
    return [{"dir": run_dir(j), "sweeps": j["sweeps"], "tags": j["tags"]}
            for j in suite_jobs(wildcards.scale, wildcards.suite)]


def bootstrap_reps(wildcards):
    if config["bootstrap_reps"] is not None:
        return config["bootstrap_reps"]
    return SMOKE_BOOTSTRAP_REPS if wildcards.scale == "smoke" else None


def analysis_mem_mb(wildcards):
    return ANALYSIS_RESOURCES[wildcards.scale]["mem_mb"]


def analysis_runtime(wildcards):
    return ANALYSIS_RESOURCES[wildcards.scale]["runtime"]


def figure_tidy(wildcards):
    return f"results/{wildcards.scale}/tidy/{FIGURES[wildcards.figure]['suite']}.parquet"


def table_tidy(wildcards):
    return f"results/{wildcards.scale}/tidy/{TABLES[wildcards.table]['suite']}.parquet"


def table_provenance(wildcards):
    return f"results/{wildcards.scale}/provenance/{TABLES[wildcards.table]['suite']}.csv"


def report_inputs(wildcards):
    scale = wildcards.scale
    return {
        "tidy": [f"results/{scale}/tidy/{suite}.parquet" for suite in SUITES],
        "provenance": [f"results/{scale}/provenance/{suite}.csv" for suite in SUITES],
        "figures": [f"results/{scale}/figures/{name}.png" for name in FIGURES],
        "claims": str(CLAIMS_FILE),
        "code": ANALYSIS_CODE,
        "reference": REFERENCE_FILES,
    }


def wildcard_choices(names):
    """A wildcard constraint accepting exactly these names."""
    return "|".join(sorted(names)) or "(?!)"
