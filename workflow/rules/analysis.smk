# Analysis: tidy CSVs, tables, plots and claim verdicts; every file below appears in
# report.html with its caption from workflow/report/.

TABLES = {
    "claims": "Claims",
    "accuracy": "Accuracy",
    "efficiency": "Efficiency",
    "theorem1": "Efficiency",
    "teachers": "Provenance",
    "versions": "Provenance",
    "skipped": "Provenance",
}
PLOTS = {
    "accuracy_vs_sparsity": "Accuracy",
    "synthetic_grid": "Synthetic images",
    "pri_stages": "Synthetic images",
    "flops": "Efficiency",
    "speedup": "Efficiency",
    "active_tokens": "Efficiency",
}


def _reported(kind, name, category):
    ext = "csv" if kind == "tables" else "png"
    return report(f"{R}/analysis/{kind}/{name}.{ext}", caption=f"../report/{name}.rst", category=category)


rule analysis:
    input:
        teachers=expand(f"{R}/teachers/{{t}}/teacher.json", t=ACTIVE_TEACHERS),
        distill=accuracy_targets(),
        pools=all_pools(),
        efficiency=efficiency_targets(),
    output:
        claims=f"{R}/analysis/claims.csv",
        **{f"table_{n}": _reported("tables", n, c) for n, c in TABLES.items()},
        **{f"plot_{n}": _reported("plots", n, c) for n, c in PLOTS.items()},
    log:
        f"{R}/logs/analysis.log",
    params:
        specs=lambda w: shlex.quote(json.dumps(SPECS)),
        missing=lambda w: shlex.quote(json.dumps(MISSING)),
        claims=lambda w: shlex.quote(json.dumps(config["claims"])),
    threads: 1
    shell:
        "{PY} -m analysis --out {R}/analysis --specs {params.specs} --missing {params.missing} "
        "--claims-config {params.claims} --teachers {input.teachers} --distill {input.distill} "
        "--pools {input.pools} --efficiency {input.efficiency} > {log} 2>&1"
