#!/usr/bin/env bash
# The speed benchmarks at the GPU sizes of the speed issue, from the repository root:
#   bash benchmarks/gpu_speed.sh [out_dir]
# A randomly initialised model of SmolLM2-135M's architecture in bf16 (real weights need not
# travel; speed and memory do not depend on them). Each benchmark writes its table and JSON.
set -uo pipefail
out=${1:-${OUT:-/tmp/gpu_speed}}
mkdir -p "$out"
model=random:SmolLM2-135M-Instruct
python3 benchmarks/rollout.py --device cuda --dtype bfloat16 --model "$model" --batch 64 --new-tokens 256 \
    --compile-decode reduce-overhead \
    --methods hf_generate hf_generate_static discrete dirichlet sampled --json "$out/rollout_gpu.json" 2>&1 | tee "$out/rollout_gpu.txt"
python3 benchmarks/grpo_step.py --device cuda --dtype bfloat16 --model "$model" --prompts-per-step 8 --new-tokens 256 \
    --steps 2 --compile-decode reduce-overhead --methods trl discrete dirichlet --json "$out/grpo_step_gpu.json" 2>&1 | tee "$out/grpo_step_gpu.txt"
