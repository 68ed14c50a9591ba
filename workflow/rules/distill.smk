# Distillation: one student per pool, the same images and KD steps for every method.


def distill_args(w):
    t = TEACHERS[w.teacher]
    student, student_ckpt = student_of(t)
    args = [f"--dataset {t['dataset']}", f"--student {student}", f"--images {DIS['images']}",
            f"--steps {DIS['steps']}", f"--batch {DIS['batch']}"]
    if t.get("data_root"):
        args.append(f"--data-root {shlex.quote(t['data_root'])}")
    if student_ckpt:
        args.append(f"--student-checkpoint {shlex.quote(student_ckpt)}")
    if DIS.get("head_only"):
        args.append("--head-only")
    if DIS.get("extra_args"):
        args.append(DIS["extra_args"])
    return " ".join(args)


rule distill:
    input:
        pools=lambda w: pools_of(w.teacher, w.tag, w.seed),
        teacher=teacher_ckpt,
    output:
        metrics=f"{R}/distill/{{teacher}}/{{tag}}/seed{{seed}}.json",
    log:
        f"{R}/logs/distill/{{teacher}}/{{tag}}/seed{{seed}}.log",
    wildcard_constraints:
        tag="|".join(TAGS) or "none",
        seed=r"\d+",
    params:
        args=distill_args,
        model=lambda w: TEACHERS[w.teacher]["model"],
        device=device_args(),
    threads: config["threads"]
    shell:
        "{PRI} distill --pool {input.pools} --teacher {input.teacher} --teacher-model {params.model} {params.args} "
        "--seed {wildcards.seed} {params.device} --threads {threads} --out {output.metrics} > {log} 2>&1"
