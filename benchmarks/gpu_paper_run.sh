#!/usr/bin/env bash
# Paper-scale inversion jobs through the real `pri invert` command on one GPU (DeiT-Ti, random
# weights, T = 4000, 128 output images, config/paper.yaml's fp32 with TF32): wall-clock per job,
# every stage's warm-up and CUDA-graph capture included. Results: $OUT/paper_run.txt
#   OUT=/some/dir bash benchmarks/gpu_paper_run.sh [tag ...]    (default tags: pri_v7 smi_default dmi)
. "$(dirname "$0")/gpu_env.sh"
TAGS=("$@")
[ ${#TAGS[@]} -eq 0 ] && TAGS=(pri_v7 smi_default dmi)
T=${T:-4000}
for tag in "${TAGS[@]}"; do
    args=$($PY -c "from pri.sweep import spec_of_tag, cli_args; print(cli_args(spec_of_tag('$tag', $T)))")
    batch=128; [ "$tag" = pri_v7 ] && batch=126
    start=$(date +%s.%N)
    $PY -m pri invert --model deit_tiny_patch16_224 $args --iterations "$T" --batch "$batch" --seed 0 \
        --device "${DEVICE:-cuda}" --dtype fp32 --no-progress --out "$OUT/pool_$tag.pt" > "${LOGDIR:-$OUT}/invert_$tag.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    echo "$tag rc=$rc wall_s=$($PY -c "print(round($end - $start, 2))") $(tail -1 "${LOGDIR:-$OUT}/invert_$tag.log")" | tee -a "$OUT/paper_run.txt"
    rm -f "$OUT/pool_$tag.pt"
done
