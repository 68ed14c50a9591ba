# Analysis: tidy CSVs, tables, plots and claim verdicts; every file below appears in
# report.html with its caption from workflow/report/.
import json
import os

TABLES = {
    "verdicts": "Claims",
    "claims": "Claims",
    "differences": "Claims",
    "power": "Claims",
    "accuracy": "Accuracy",
    "quantization": "Quantisation",
    "efficiency": "Efficiency",
    "theorem1": "Efficiency",
    "teachers": "Provenance",
    "versions": "Provenance",
    "skipped": "Provenance",
}
PLOTS = {
    "forest": "Claims",
    "accuracy_vs_sparsity": "Accuracy",
    "update_counts": "Controls",
    "accuracy_vs_compute": "Controls",
    "quantization": "Quantisation",
    "synthetic_grid": "Synthetic images",
    "pri_stages": "Synthetic images",
    "flops": "Efficiency",
    "speedup": "Efficiency",
    "active_tokens": "Efficiency",
}


rule analysis:
    input:
        teachers=PLAN.teacher_metrics(),
        distill=PLAN.distill_targets(),
        pools=PLAN.all_pools(),
        quantize=PLAN.quantize_targets(),
        efficiency=PLAN.efficiency_targets(),
    output:
        claims=f"{P.analysis}/claims.csv",
        **{f"table_{n}": reported(f"{P.analysis}/tables/{n}.csv", n, c) for n, c in TABLES.items()},
        **{f"plot_{n}": reported(f"{P.analysis}/plots/{n}.png", n, c) for n, c in PLOTS.items()},
    log:
        P.log_analysis,
    params:
        py=PY,
        out=lambda w, output: os.path.dirname(output.claims),
        missing=json.dumps([m.as_dict() for m in PLAN.missing]),
        claims=json.dumps(config["claims"]),
    conda:
        ENV
    threads: 1
    resources:
        **RESOURCES.get("analysis", {}),
    shell:
        "{params.py} -m analysis --out {params.out:q} --missing {params.missing:q} --claims-config {params.claims:q} "
        "--teachers {input.teachers:q} --distill {input.distill:q} --pools {input.pools:q} "
        "--efficiency {input.efficiency:q} --quantize {input.quantize:q} > {log:q} 2>&1"
