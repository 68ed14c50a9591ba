# Efficiency track, per model at paper scale with random weights (FLOPs and timing need no
# trained weights; every result says random-init): the cost model and fvcore MACs of every
# schedule with Theorem 1, and the wall-clock per generated image. A timing job takes every
# core (and, on Slurm, a whole GPU) so two timed jobs never share a device.


rule efficiency_flops:
    output:
        P.efficiency.replace("{what}", "flops"),
    log:
        P.log_efficiency.replace("{what}", "flops"),
    params:
        py=PY,
        args=quoted(PLAN.efficiency_args("flops")),
    conda:
        ENV
    threads: 1
    resources:
        **RESOURCES.get("efficiency_flops", {}),
    shell:
        "{params.py} -m pri efficiency --model {wildcards.model:q} {params.args} --threads {threads} "
        "--out {output:q} > {log:q} 2>&1"


rule efficiency_time:
    output:
        P.efficiency.replace("{what}", "time"),
    log:
        P.log_efficiency.replace("{what}", "time"),
    params:
        py=PY,
        args=quoted(PLAN.efficiency_args("time")),
    conda:
        ENV
    threads: all_cores()
    resources:
        gpu=1,
        **RESOURCES.get("efficiency_time", {}),
    shell:
        "{params.py} -m pri efficiency --model {wildcards.model:q} {params.args} --threads {threads} "
        "--out {output:q} > {log:q} 2>&1"
