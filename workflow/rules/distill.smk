# Distillation: one student per pool, the same images and KD steps for every method.


def distill_args(w):
    t = TEACHERS[w.teacher]
    args = [f"--dataset {t['dataset']}", f"--student {DIS['student']}", f"--images {DIS['images']}",
            f"--steps {DIS['steps']}", f"--batch {DIS['batch']}"]
    if t.get("data_root"):
        args.append(f"--data-root {shlex.quote(t['data_root'])}")
    if DIS.get("student_checkpoint"):
        args.append(f"--student-checkpoint {shlex.quote(DIS['student_checkpoint'])}")
    if DIS.get("head_only"):
        args.append("--head-only")
    if DIS.get("extra_args"):
        args.append(DIS["extra_args"])
    return " ".join(args)


rule distill:
    input:
        pool=f"{R}/pools/{{teacher}}/{{tag}}/seed{{seed}}.pt",
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
        "pri distill --pool {input.pool} --teacher {input.teacher} --teacher-model {params.model} {params.args} "
        "--seed {wildcards.seed} {params.device} --threads {threads} --out {output.metrics} > {log} 2>&1"
