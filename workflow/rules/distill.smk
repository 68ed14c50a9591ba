# Distillation: one student per teacher x sweep x tag x seed, the same budget for every method.


rule distill:
    input:
        pools=lambda w: PLAN.pools_of(w.teacher, w.sweep, w.tag, int(w.seed)),
        teacher=P.teacher_ckpt,
    output:
        metrics=P.distill,
    log:
        P.log_distill,
    params:
        py=PY,
        args=lambda w: quoted(PLAN.distill_args(w.teacher, w.sweep, w.tag, int(w.seed))),
        model=lambda w: PLAN.teachers[w.teacher]["model"],
    conda:
        ENV
    threads: config["threads"]
    shell:
        "{params.py} -m pri distill --pool {input.pools:q} --teacher {input.teacher:q} "
        "--teacher-model {params.model:q} {params.args} --threads {threads} --out {output.metrics:q} > {log:q} 2>&1"
