# Analysis: run folders -> one tidy table per suite (CSV and parquet) and its provenance -> each declared
# figure (PNG and PDF) and result table (CSV, Markdown, LaTeX). The scripts only call analysis/'s pure
# functions and write their results.


rule collect:
    input:
        unpack(suite_run_files),
        code=ANALYSIS_CODE,
    output:
        csv="results/{scale}/tidy/{suite}.csv",
        parquet="results/{scale}/tidy/{suite}.parquet",
        provenance="results/{scale}/provenance/{suite}.csv",
        run_json=directory("results/{scale}/run_json/{suite}"),
    log:
        messages="logs/{scale}/collect/{suite}.log",
    params:
        runs=collect_runs,
        row_columns=lambda wildcards: SUITES[wildcards.suite].get("row_columns", []),
    resources:
        mem_mb=analysis_mem_mb,
        runtime=analysis_runtime,
    conda:
        "../conda/qrepro.yaml"
    script:
        "../scripts/collect.py"


rule figure:
    input:
        tidy=figure_tidy,
        code=ANALYSIS_CODE,
        reference=REFERENCE_FILES,
    output:
        png=report(
            "results/{scale}/figures/{figure}.png",
            caption="../report/figure.rst",
            category="Figures",
            subcategory="{scale} scale",
        ),
        pdf="results/{scale}/figures/{figure}.pdf",
    log:
        messages="logs/{scale}/figure/{figure}.log",
    params:
        spec=lambda wildcards: FIGURES[wildcards.figure],
        reps=bootstrap_reps,
    resources:
        mem_mb=analysis_mem_mb,
        runtime=analysis_runtime,
    conda:
        "../conda/qrepro.yaml"
    script:
        "../scripts/figure.py"


rule table:
    input:
        tidy=table_tidy,
        provenance=table_provenance,
        code=ANALYSIS_CODE,
        reference=REFERENCE_FILES,
    output:
        csv=report(
            "results/{scale}/tables/{table}.csv",
            caption="../report/table.rst",
            category="Tables",
            subcategory="{scale} scale",
        ),
        md="results/{scale}/tables/{table}.md",
        tex="results/{scale}/tables/{table}.tex",
    log:
        messages="logs/{scale}/table/{table}.log",
    params:
        spec=lambda wildcards: TABLES[wildcards.table],
        reps=bootstrap_reps,
    resources:
        mem_mb=analysis_mem_mb,
        runtime=analysis_runtime,
    conda:
        "../conda/qrepro.yaml"
    script:
        "../scripts/table.py"
