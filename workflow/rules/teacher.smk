# The teacher: trained (small ViTs), fine-tuned (DeiT from ImageNet weights) or loaded, with provenance.


rule teacher:
    output:
        ckpt=P.teacher_ckpt,
        metrics=P.teacher_metrics,
    log:
        P.log_teacher,
    params:
        py=PY,
        args=lambda w: quoted(PLAN.teacher_args(w.teacher)),
    conda:
        ENV
    threads: all_cores()
    resources:
        **RESOURCES.get("teacher", {}),
    priority: 10  # every job waits for it: start it first, let the one-core jobs fill gaps later
    shell:
        "{params.py} -m pri teacher {params.args} --threads {threads} "
        "--out {output.ckpt:q} --metrics {output.metrics:q} > {log:q} 2>&1"
