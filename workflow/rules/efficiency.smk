# Efficiency track, per model at paper scale with random weights (FLOPs and timing need no
# trained weights; every result says random-init): the cost model and fvcore MACs of every
# schedule with Theorem 1, and the wall-clock per generated image. A timing job takes every
# core (and, on Slurm, a whole GPU) so two timed jobs never share a device.

EFF_TAGS = TAGS + ["smi_star"] + [f"smi_star_v{v}" for v in INV["methods"].get("pri", [])]
TIME_TAGS = list(EFF["time_tags"] or TAGS)


rule efficiency_flops:
    output:
        f"{R}/efficiency/{{model}}/flops.json",
    log:
        f"{R}/logs/efficiency/{{model}}_flops.log",
    params:
        tags=" ".join(EFF_TAGS),
    threads: 1
    shell:
        "{PRI} efficiency --model {wildcards.model} --img-size " + str(EFF["img_size"]) + " "
        f"--iterations {EFF['iterations']} --batch {EFF['batch']} "
        "--schedules {params.tags} --what cost flops --threads {threads} --out {output} > {log} 2>&1"


rule efficiency_time:
    output:
        f"{R}/efficiency/{{model}}/time.json",
    log:
        f"{R}/logs/efficiency/{{model}}_time.log",
    params:
        tags=" ".join(TIME_TAGS),
        device=device_args(),
        batch=EFF["time_batch"] or EFF["batch"],
    threads: all_cores()
    resources:
        gpu=1,
    shell:
        "{PRI} efficiency --model {wildcards.model} --img-size " + str(EFF["img_size"]) + " "
        f"--iterations {EFF['iterations']} --mode {EFF['mode']} "
        f"--steps {EFF['steps']} --warmup {EFF['warmup']} --repeats {EFF['repeats']} --dtype {EFF['dtype']} "
        "--batch {params.batch} --schedules {params.tags} --what time {params.device} --threads {threads} "
        "--out {output} > {log} 2>&1"
