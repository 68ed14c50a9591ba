# Inversion: one job per teacher x method tag x seed x batch, each writing one pool file.
# Batch b of seed s inverts with seed s * 1000 + b (batch 0 uses the seed itself).


rule invert:
    input:
        teacher=teacher_ckpt,
    output:
        pool=f"{R}/pools/{{teacher}}/{{tag}}/seed{{seed}}/batch{{batch}}.pt",
    log:
        f"{R}/logs/invert/{{teacher}}/{{tag}}/seed{{seed}}_batch{{batch}}.log",
    wildcard_constraints:
        tag="|".join(TAGS) or "none",
        seed=r"\d+",
        batch=r"\d+",
    params:
        seed=lambda w: int(w.seed) * 1000 + int(w.batch) if int(w.batch) else int(w.seed),
        model=lambda w: TEACHERS[w.teacher]["model"],
        schedule=lambda w: cli_args(SPECS[w.tag]),
        device=device_args(),
    threads: config["threads"]
    shell:
        "{PRI} invert --model {params.model} --checkpoint {input.teacher} {params.schedule} "
        f"--iterations {INV['iterations']} --batch {INV['images']} --lr {INV['lr']} --tv-weight {INV['tv_weight']} "
        f"--dtype {config['dtype']} "
        "--seed {params.seed} {params.device} --threads {threads} --out {output.pool} > {log} 2>&1"
