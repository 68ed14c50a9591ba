# Distillation: one job per teacher x sweep x seed distils one student per method tag (the same
# budget, initialisation and data order for every tag of the seed), one process for all of them.

for _kind, (_tags, _names) in PLAN.sweep_kinds().items():

    rule:
        name:
            f"distill_{_kind}"
        input:
            pools=lambda w, _tags=_tags: [p for t in _tags for p in PLAN.pools_of(w.teacher, w.sweep, t, int(w.seed))],
            teacher=P.teacher_ckpt,
        output:
            metrics=expand(P.distill, tag=_tags, allow_missing=True),
        log:
            P.log_distill,
        wildcard_constraints:
            sweep="|".join(sorted(_names)),
        params:
            py=PY,
            args=lambda w, input, threads: quoted(
                PLAN.distill_job(w.teacher, w.sweep, int(w.seed), input.teacher, threads)
            ),
        conda:
            ENV
        threads: config["threads"]
        resources:
            **RESOURCES.get(f"distill_{_kind}", {}),
        priority: 5 if _kind == "main" else 0  # the long jobs first, the controls fill the gaps
        shell:
            "{params.py} -m pri batch {params.args} > {log:q} 2>&1"
