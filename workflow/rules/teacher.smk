# The teacher: trained (small ViTs), fine-tuned (DeiT from ImageNet weights) or loaded, with provenance.


def teacher_args(w):
    t = TEACHERS[w.teacher]
    args = [f"--model {t['model']}", f"--dataset {t['dataset']}"]
    if t.get("data_root"):
        args.append(f"--data-root {shlex.quote(t['data_root'])}")
    for key in ("num_classes", "img_size"):
        if t.get(key):
            args.append(f"--{key.replace('_', '-')} {t[key]}")
    if t.get("checkpoint"):
        args.append(f"--checkpoint {shlex.quote(t['checkpoint'])}")
    elif t.get("init_checkpoint"):
        args.append(f"--init-checkpoint {shlex.quote(t['init_checkpoint'])}")
    train = dict(t.get("train") or {})
    extra = train.pop("extra_args", "")
    for key, val in train.items():
        args.append(f"--{key.replace('_', '-')} {val}")
    if extra:
        args.append(extra)
    return " ".join(args)


rule teacher:
    output:
        ckpt=f"{R}/teachers/{{teacher}}/teacher.pt",
        metrics=f"{R}/teachers/{{teacher}}/teacher.json",
    log:
        f"{R}/logs/teacher/{{teacher}}.log",
    params:
        args=teacher_args,
        device=device_args(),
    threads: all_cores()
    shell:
        "{PRI} teacher {params.args} {params.device} --threads {threads} "
        "--out {output.ckpt} --metrics {output.metrics} > {log} 2>&1"
