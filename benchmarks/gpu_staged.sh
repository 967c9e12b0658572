#!/usr/bin/env bash
# The GPU checks of benchmarks/gpu_speed.sh and benchmarks/gpu_distributed.sh in stages under one
# time budget, for a machine lent for minutes, from the repository root:
#   bash benchmarks/gpu_staged.sh OUT [budget_seconds]
# Each method runs in its own process (rollout.py / grpo_step.py --method) and appends its JSON line
# and its process's wall time (model load and compilation included) to OUT/log.txt as soon as it
# ends, so a stage cut short by the budget keeps what finished. Stage deadlines are fractions of the
# budget: rollout 45 %, GRPO step 70 %, strategies the rest. A failed method's tail goes to
# OUT/errors.txt. Python packages the machine lacks (trl, reasoning-gym, jsonargparse) go on
# PYTHONPATH beforehand; MOTG_LIGHTNING_CACHE may point at a saved copy of the embedded tokenizer.
set -uo pipefail
out=${1:?usage: gpu_staged.sh OUT [budget_seconds]}
budget=${2:-470}
mkdir -p "$out"
log=$out/log.txt
start=$(date +%s)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
left() { local seconds=$(( start + budget * $1 / 100 - $(date +%s) )); echo $(( seconds < 5 ? 5 : seconds )); }
model=random:SmolLM2-135M-Instruct
python3 -c "import torch, transformers, lightning; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'lightning', lightning.__version__, torch.cuda.get_device_name(0))" 2>&1 | tee -a "$log"

run_methods() {  # script, deadline percentage, then the methods; the shared arguments come from $arguments
    local script=$1 deadline=$2; shift 2
    for method in "$@"; do
        local begin=$(date +%s.%N)
        timeout "$(left "$deadline")" python3 "benchmarks/$script" --method "$method" "${arguments[@]}" > "/tmp/staged_$method.txt" 2>&1
        local code=$? end=$(date +%s.%N)
        echo "$method rc=$code process_wall_s=$(python3 -c "print(round($end - $begin, 1))") $(grep '^{' "/tmp/staged_$method.txt" | tail -n 1)" | tee -a "$log"
        [ $code -ne 0 ] && { echo "== $script $method"; tail -n 15 "/tmp/staged_$method.txt"; } >> "$out/errors.txt"
    done
}

echo "== stage 1: rollout, bf16, batch 64 x 256 new tokens, our decode step compiled (reduce-overhead)" | tee -a "$log"
arguments=(--device cuda --dtype bfloat16 --model "$model" --batch 64 --new-tokens 256 --repeats 3 --compile-decode reduce-overhead)
run_methods rollout.py 45 hf_generate_static discrete dirichlet sampled gumbel gaussian hf_generate
echo "== stage 2: GRPO step against TRL, bf16, 8 prompts x 8 x 256 tokens" | tee -a "$log"
arguments=(--device cuda --dtype bfloat16 --model "$model" --prompts-per-step 8 --new-tokens 256 --steps 2 --compile-decode reduce-overhead)
run_methods grpo_step.py 70 trl discrete dirichlet
echo "== stage 3: ddp, fsdp, fsdp2 through the CLI, then validate --ckpt_path" | tee -a "$log"
timeout "$(left 100)" bash benchmarks/gpu_distributed.sh /tmp/staged_distributed 2>&1 | tee -a "$log"
echo "total wall $(( $(date +%s) - start )) s" | tee -a "$log"
