#!/usr/bin/env bash
# Every GPU check in one prepared run, in stages, from the repository root:
#   bash benchmarks/gpu_all.sh OUT              # on a CUDA machine, within BUDGET seconds (default 480)
#   bash benchmarks/gpu_all.sh OUT --dry-run    # the same stages on the CPU with the tiny model (the tests run it)
# Stages, in order, each writing its table under OUT as soon as it ends (a stage cut short by its
# deadline keeps the earlier ones; deadlines are fractions of BUDGET):
#   1. rollout.txt/.json   SmolLM2-135M architecture, bf16, batch 64 x 256 new tokens: HF generate (eager and
#                          static cache) and our rollout with the decode step compiled, per rule; methods
#                          interleaved over rounds, median and spread, compile time apart (warm-up)
#   2. grpo_step.txt/.json one GRPO step, 8 prompts x 8 x 256 tokens, bf16: ours against TRL's GRPOTrainer,
#                          each also with LoRA adapters (+lora)
#   3. distributed.txt     ddp, fsdp (FSDP1), fsdp2 through the CLI on every GPU, a reference model where the
#                          strategy allows one; s/step, peak memory, then validate --ckpt_path
#   4. paper.txt           the paper's scale: random:Qwen2.5-1.5B-Instruct, G = 10, 4 prompts, 1024 new
#                          tokens, bf16-mixed, gradient checkpointing: a warm-up and a measured step
#   5. tests.txt           the test suite under this machine's versions (-x), with the time left
# summary.txt holds each stage's exit status and wall time. Packages the machine lacks (TRL,
# Reasoning-Gym, jsonargparse) go on PYTHONPATH beforehand; MOTG_LIGHTNING_CACHE may point at a
# saved copy of the embedded tokenizer (the random models need only the tokenizer).
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_all.sh OUT [--dry-run]}
mode=${2:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)
budget=${BUDGET:-480}

if [ "$mode" = --dry-run ]; then
    model=tiny-random:SmolLM2-135M-Instruct; paper_model=$model; device=cpu; dtype=float32; compile=()
    rollout_size=(--batch 2 --new-tokens 4 --rounds 2 --no-memory --methods hf_generate_static discrete dirichlet)
    grpo_size=(--prompts-per-step 1 --group-size 2 --new-tokens 4 --steps 1 --rounds 1)
    grpo_methods=(discrete discrete+lora)
    distributed=(STRATEGIES="ddp fsdp2" DEVICES=1 CONFIG=configs/smoke.yaml STEPS=2
                 EXTRA_FLAGS="--trainer.accelerator=cpu --trainer.precision=32-true")
    paper_size=(--trainer.accelerator=cpu --trainer.precision=32-true --model.rollout.max_new_tokens=4
                --model.grpo.num_generations=2 --data.batch_size=1 --model.memory.micro_batch_size=2)
    run_tests=false
else
    model=random:SmolLM2-135M-Instruct; paper_model=random:Qwen2.5-1.5B-Instruct; device=cuda; dtype=bfloat16
    compile=(--compile-decode reduce-overhead)
    rollout_size=(--batch 64 --new-tokens 256 --rounds 3
                  --methods hf_generate hf_generate_static discrete dirichlet sampled gumbel gaussian)
    grpo_size=(--prompts-per-step 8 --new-tokens 256 --steps 2 --rounds 2)
    grpo_methods=(discrete dirichlet dirichlet+lora)
    distributed=()
    paper_size=()
    run_tests=true
fi
python3 -c "import trl" 2>/dev/null && grpo_methods=(trl trl+lora "${grpo_methods[@]}")

left() {  # seconds until a deadline at $1 percent of the budget (at least 5)
    local seconds=$(( start + budget * $1 / 100 - $(date +%s) ))
    echo $(( seconds < 5 ? 5 : seconds ))
}
stage() {  # name, command...: output in OUT/name.txt, exit status and wall time in OUT/summary.txt
    local name=$1 begin=$(date +%s); shift
    "$@" > "$out/$name.txt" 2>&1
    local code=$?
    echo "$name: exit $code, $(( $(date +%s) - begin )) s$([ $code -eq 124 ] && echo ' (deadline reached)')" | tee -a "$out/summary.txt"
}
paper_step() {  # stage 4: two steps of configs/paper.yaml, then its step times and peak memory
    local dir="$out/paper_run"
    mkdir -p "$dir"
    MOTG_PROBE_DIR="$dir" PYTHONPATH="tests:$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout "$(left 90)" python3 main.py fit \
        --config configs/paper.yaml --model.model_name_or_path="$paper_model" "${paper_size[@]}" \
        --trainer.max_steps=2 --trainer.limit_val_batches=0 --trainer.logger=false --trainer.enable_checkpointing=false \
        --trainer.enable_progress_bar=false --trainer.callbacks=[ddp_probe.RankProbe] --trainer.default_root_dir="$dir" \
        --data.train_size=40 --data.val_size=4 --data.test_size=4 || return $?
    python3 - "$dir/rank_0.json" <<'PY'
import json
import sys

rank = json.load(open(sys.argv[1]))
for step in rank["steps"]:
    print(f"step {step['step']}: {step['seconds']:.1f} s (rollout {step['rollout_seconds']:.1f} s, "
          f"update {step['update_seconds']:.1f} s)")
print(f"peak memory {rank['peak_memory_gib']:.2f} GiB")
PY
}

python3 -c "import torch, transformers, lightning; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'lightning', lightning.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU')" | tee "$out/summary.txt"

stage rollout timeout "$(left 30)" python3 benchmarks/rollout.py --model "$model" --device "$device" --dtype "$dtype" "${compile[@]}" \
    "${rollout_size[@]}" --json "$out/rollout.json"
stage grpo_step timeout "$(left 50)" python3 benchmarks/grpo_step.py --model "$model" --device "$device" --dtype "$dtype" "${compile[@]}" \
    "${grpo_size[@]}" --methods "${grpo_methods[@]}" --json "$out/grpo_step.json"
stage distributed timeout "$(left 70)" env "${distributed[@]}" bash benchmarks/gpu_distributed.sh "$out/distributed_runs"
stage paper paper_step
if $run_tests; then
    stage tests timeout "$(left 100)" python3 -m pytest -q -x -p no:cacheprovider tests
fi
echo "total $(( $(date +%s) - start )) s" | tee -a "$out/summary.txt"
