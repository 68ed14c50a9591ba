# Inversion: one job per teacher x sweep x seed x batch inverts every method tag of the sweep
# (one pool file per tag), one process for all of them. One rule per kind of sweep (main, the
# iso-compute control, one-class inversion), since each has its own tags.

for _kind, (_tags, _names) in PLAN.sweep_kinds().items():

    rule:
        name:
            f"invert_{_kind}"
        input:
            teacher=P.teacher_ckpt,
        output:
            pools=expand(P.pool, tag=_tags, allow_missing=True),
        log:
            P.log_invert,
        wildcard_constraints:
            sweep="|".join(sorted(_names)),
        params:
            py=PY,
            args=lambda w, input, threads: quoted(
                PLAN.invert_job(w.teacher, w.sweep, int(w.seed), int(w.batch), input.teacher, threads)
            ),
        conda:
            ENV
        threads: config["threads"]
        resources:
            **RESOURCES.get(f"invert_{_kind}", {}),
        priority: 5 if _kind == "main" else 0  # the long jobs first, the controls fill the gaps
        shell:
            "{params.py} -m pri batch {params.args} > {log:q} 2>&1"
