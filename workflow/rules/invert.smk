# Inversion: one job per teacher x method tag x seed, each writing one pool file.


rule invert:
    input:
        teacher=teacher_ckpt,
    output:
        pool=f"{R}/pools/{{teacher}}/{{tag}}/seed{{seed}}.pt",
    log:
        f"{R}/logs/invert/{{teacher}}/{{tag}}/seed{{seed}}.log",
    wildcard_constraints:
        tag="|".join(TAGS) or "none",
        seed=r"\d+",
    params:
        model=lambda w: TEACHERS[w.teacher]["model"],
        schedule=lambda w: cli_args(SPECS[w.tag]),
        device=device_args(),
    threads: config["threads"]
    shell:
        "pri invert --model {params.model} --checkpoint {input.teacher} {params.schedule} "
        f"--iterations {INV['iterations']} --batch {INV['images']} --lr {INV['lr']} --tv-weight {INV['tv_weight']} "
        f"--dtype {config['dtype']} "
        "--seed {wildcards.seed} {params.device} --threads {threads} --out {output.pool} > {log} 2>&1"
