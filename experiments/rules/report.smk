# The replication report: every claim of analysis/claims.yaml evaluated on the tidy tables of this scale
# (claims whose suite did not run get the verdict "not run"), the verdicts as a table, and the
# provenance of every run the numbers come from.


rule replication_report:
    input:
        unpack(report_inputs),
    output:
        report=report(
            "results/{scale}/report.md",
            caption="../report/report.rst",
            category="Report",
            subcategory="{scale} scale",
        ),
        provenance="results/{scale}/provenance.csv",
        claims_csv="results/{scale}/tables/claims.csv",
        claims_md="results/{scale}/tables/claims.md",
        claims_tex="results/{scale}/tables/claims.tex",
    log:
        messages="logs/{scale}/report.log",
    params:
        reps=bootstrap_reps,
    resources:
        mem_mb=analysis_mem_mb,
        runtime=analysis_runtime,
    conda:
        "../conda/qrepro.yaml"
    script:
        "../scripts/report.py"
