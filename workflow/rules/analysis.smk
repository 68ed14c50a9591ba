# Analysis: tidy CSVs, tables, plots and claim verdicts. Tables are written as CSV and markdown
# (plain outputs) and as small HTML files: the HTML ones and the plots appear in report.html, each
# with its caption from workflow/report/<name>.rst and its category from analysis/outputs.py,
# which names every output once.
import json
import os

from analysis.outputs import PLOTS, TABLES


rule analysis:
    input:
        teachers=PLAN.teacher_metrics(),
        distill=PLAN.distill_targets(),
        pools=PLAN.all_pools(),
        quantize=PLAN.quantize_targets(),
        efficiency=PLAN.efficiency_targets(),
    output:
        claims=f"{P.analysis}/claims.csv",
        **{f"table_{n}": f"{P.analysis}/tables/{n}.csv" for n in TABLES},
        **{f"markdown_{n}": f"{P.analysis}/tables/{n}.md" for n in TABLES},
        # each with its caption from workflow/report/<name>.rst
        **{f"html_{n}": report(f"{P.analysis}/tables/{n}.html", caption=f"../report/{n}.rst", category=c)
           for n, c in TABLES.items()},
        **{f"plot_{n}": report(f"{P.analysis}/plots/{n}.png", caption=f"../report/{n}.rst", category=c)
           for n, c in PLOTS.items()},
    log:
        P.log_analysis,
    params:
        py=PY,
        out=lambda w, output: os.path.dirname(output.claims),
        missing=json.dumps([m.as_dict() for m in PLAN.missing]),
        claims=json.dumps(config["claims"]),
        # teacher -> its dataset and data root: the synthetic grid's row of real images
        data=json.dumps({t: {"dataset": c.get("dataset"), "data_root": c.get("data_root")}
                         for t, c in config["teachers"].items()}),
    conda:
        ENV
    threads: 1
    resources:
        **RESOURCES.get("analysis", {}),
    shell:
        "{params.py} -m analysis --out {params.out:q} --missing {params.missing:q} --claims-config {params.claims:q} "
        "--data {params.data:q} --teachers {input.teachers:q} --distill {input.distill:q} --pools {input.pools:q} "
        "--efficiency {input.efficiency:q} --quantize {input.quantize:q} > {log:q} 2>&1"
