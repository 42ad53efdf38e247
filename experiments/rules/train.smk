# Training: one job per (scale, suite, run label, environment), every seed of the suite's scale a member of
# that one job (DESIGN.md, The member axis). Outputs are flagged update(): `qrepro train` resumes a run folder
# from its checkpoint, so a rerun or a retry after a kill continues the run instead of deleting it. run.json
# exists from a run's first step and is rewritten when a signal stops it, possibly after Snakemake has removed
# the outputs of the failed job, so it cannot say whether training finished: `done`, touched only when
# `qrepro train` exits 0 (complete, diverged, or already finished), is the output that says so.


rule train:
    output:
        run_json=update("runs/{scale}/{suite}/{label}/{env}/run.json"),
        metrics=update("runs/{scale}/{suite}/{label}/{env}/metrics.csv"),
        done="runs/{scale}/{suite}/{label}/{env}/done",
    log:
        "logs/{scale}/train/{suite}/{label}/{env}.log",
    wildcard_constraints:
        suite=wildcard_choices({j["suite"] for j in JOBS.values() if j["kind"] == "train"}),
    params:
        algo=lambda wildcards: job_of(wildcards)["algo"],
        env=lambda wildcards: job_of(wildcards)["env"],
        seeds=seeds_arg,
        steps=lambda wildcards: job_of(wildcards)["steps"],
        device=device_of,
        sets=set_args,
        out=lambda wildcards, output: Path(output.run_json).parent,
    threads: threads_of
    resources:
        # cpus_per_task repeats threads for SLURM (--cpus-per-task), so the plan shows every request.
        cpus_per_task=threads_of,
        mem_mb=mem_mb_of,
        runtime=runtime_of,
        gpu=gpus_of,
        slurm_partition=partition_of,
    conda:
        "../conda/qrepro.yaml"
    shell:
        "python -m experiments.cli train --algo {params.algo} --env {params.env} --seeds {params.seeds}"
        " --steps {params.steps} --out {params.out} --device {params.device} {params.sets} --set threads={threads}"
        " > {log} 2>&1 && touch {output.done}"


rule synthetic:
    output:
        run_json="runs/{scale}/{suite}/{label}/{env}/run.json",
        metrics="runs/{scale}/{suite}/{label}/{env}/metrics.csv",
    log:
        "logs/{scale}/synthetic/{suite}/{label}/{env}.log",
    wildcard_constraints:
        suite=wildcard_choices(s for s in SUITES if SUITES[s]["kind"] == "synthetic"),
    params:
        script=str(SYNTHETIC_SCRIPT),
        env=lambda wildcards: job_of(wildcards)["env"],
        seeds=seeds_arg,
        sets=set_args,
        out=lambda wildcards, output: Path(output.run_json).parent,
    threads: threads_of
    resources:
        cpus_per_task=threads_of,
        mem_mb=mem_mb_of,
        runtime=runtime_of,
        gpu=0,
        slurm_partition=partition_of,
    conda:
        "../conda/qrepro.yaml"
    shell:
        "python {params.script} --env {params.env} --seeds {params.seeds} --out {params.out} {params.sets}"
        " > {log} 2>&1"
