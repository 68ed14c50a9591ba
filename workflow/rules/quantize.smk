# Post-training quantisation of each teacher calibrated on its pools (one job per seed, every tag
# in one process), and the noise and real-image baselines once per teacher.

_QTAGS = sorted({t for tid in PLAN.active if PLAN.runs(tid, "quantize") for t in PLAN.quant_tags(tid)})


rule quantize:
    input:
        pools=lambda w: [p for t in PLAN.quant_tags(w.teacher) for p in PLAN.pools_of(w.teacher, "main", t, int(w.seed))],
        teacher=P.teacher_ckpt,
    output:
        metrics=expand(P.quantize, tag=_QTAGS, sweep="main", allow_missing=True),
    log:
        P.log_quantize,
    params:
        py=PY,
        args=lambda w, input, threads: quoted(PLAN.quantize_job(w.teacher, int(w.seed), input.teacher, threads)),
    conda:
        ENV
    threads: config["threads"]
    resources:
        **RESOURCES.get("quantize", {}),
    shell:
        "{params.py} -m pri batch {params.args} > {log:q} 2>&1"


rule quantize_baseline:
    input:
        teacher=P.teacher_ckpt,
    output:
        metrics=expand(P.quantize_baseline, calibration=["noise", "real"], allow_missing=True),
    log:
        P.log_quantize_baseline,
    params:
        py=PY,
        args=lambda w, input, threads: quoted(PLAN.quantize_baseline_job(w.teacher, input.teacher, threads)),
    conda:
        ENV
    threads: config["threads"]
    resources:
        **RESOURCES.get("quantize_baseline", {}),
    shell:
        "{params.py} -m pri batch {params.args} > {log:q} 2>&1"
