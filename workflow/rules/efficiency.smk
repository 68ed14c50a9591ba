# Efficiency track, per model at paper scale with random weights (FLOPs and timing need no
# trained weights; every result says random-init): the cost model and fvcore MACs for every
# schedule, and the wall-clock per generated image. A timing job takes every core (and asks
# Slurm for a whole GPU) so two timed jobs never share a device.


def sweep_json():
    return json.dumps({tag: SPECS_EFF[tag] for tag in SPECS_EFF})


SPECS_EFF = method_specs(INV["methods"], EFF["iterations"])


rule efficiency_flops:
    output:
        f"{R}/efficiency/{{model}}/flops.json",
    log:
        f"{R}/logs/efficiency/{{model}}_flops.log",
    params:
        sweep=lambda w: shlex.quote(sweep_json()),
    threads: 1
    shell:
        "{PRI} efficiency --model {wildcards.model} --img-size " + str(EFF["img_size"]) + " "
        f"--iterations {EFF['iterations']} --batch {EFF['batch']} "
        "--sweep {params.sweep} --what flops --out {output} > {log} 2>&1"


rule efficiency_time:
    output:
        f"{R}/efficiency/{{model}}/time.json",
    log:
        f"{R}/logs/efficiency/{{model}}_time.log",
    params:
        sweep=lambda w: shlex.quote(sweep_json()),
        device=device_args(),
    threads: workflow.cores
    resources:
        gpu=1,
    shell:
        "{PRI} efficiency --model {wildcards.model} --img-size " + str(EFF["img_size"]) + " "
        f"--iterations {EFF['iterations']} --batch {EFF['batch']} --mode {EFF['mode']} "
        f"--steps {EFF['steps']} --warmup {EFF['warmup']} --repeats {EFF['repeats']} --dtype {EFF['dtype']} "
        "--sweep {params.sweep} --what time {params.device} --threads {threads} --out {output} > {log} 2>&1"
