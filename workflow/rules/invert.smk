# Inversion: one job per teacher x sweep x method tag x seed x batch, each writing one pool file.


rule invert:
    input:
        teacher=P.teacher_ckpt,
    output:
        pool=P.pool,
    log:
        P.log_invert,
    params:
        py=PY,
        args=lambda w: quoted(PLAN.invert_args(w.teacher, w.sweep, w.tag, int(w.seed), int(w.batch))),
    conda:
        ENV
    threads: config["threads"]
    shell:
        "{params.py} -m pri invert {params.args} --checkpoint {input.teacher:q} --threads {threads} "
        "--out {output.pool:q} > {log:q} 2>&1"
