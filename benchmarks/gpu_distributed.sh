#!/usr/bin/env bash
# DDP, FSDP1 and FSDP2 on every GPU of this machine, from the repository root:
#   bash benchmarks/gpu_distributed.sh [out_dir]
# A randomly initialised model of SmolLM2-135M's architecture at the default config's shape, a few
# steps per strategy; prints seconds per step and peak memory per device (the probe callback of the
# tests writes one JSON per rank), then validates from the checkpoint the fit saved
# (`validate --ckpt_path`), and fails if any strategy fails either.
# Environment (for benchmarks/gpu_all.sh --dry-run): STRATEGIES (default "ddp fsdp fsdp2"), MODEL
# (default random:SmolLM2-135M-Instruct), DEVICES (default: every GPU), CONFIG (default
# configs/default.yaml), STEPS (default 4), EXTRA_FLAGS (more CLI flags).
set -uo pipefail
out=${1:-${OUT:-/tmp/gpu_distributed}}
mkdir -p "$out"
gpus=${DEVICES:-$(python3 -c "import torch; print(torch.cuda.device_count())")}
model=${MODEL:-random:SmolLM2-135M-Instruct}
config=${CONFIG:-configs/default.yaml}
read -r -a extra <<< "${EXTRA_FLAGS:-}"
echo "devices: $gpus"
status=0
for strategy in ${STRATEGIES:-ddp fsdp fsdp2}; do
    dir="$out/$strategy"; mkdir -p "$dir"
    beta=0.04; [ "$strategy" = fsdp ] && beta=0  # FSDP1 refuses a reference model (docs/distributed.md)
    start=$(date +%s.%N)
    MOTG_PROBE_DIR="$dir" PYTHONPATH="tests:$PWD${PYTHONPATH:+:$PYTHONPATH}" python3 main.py fit \
        --config "$config" --config "configs/strategy/$strategy.yaml" --trainer.devices="$gpus" \
        --model.model_name_or_path="$model" --model.grpo.beta=$beta "${extra[@]}" \
        --trainer.max_steps="${STEPS:-4}" --trainer.limit_val_batches=0 --trainer.enable_progress_bar=false \
        --trainer.callbacks=[ddp_probe.RankProbe] --trainer.logger=false --trainer.default_root_dir="$dir" \
        > "$dir/log.txt" 2>&1
    code=$?
    end=$(date +%s.%N)
    if [ $code -ne 0 ]; then echo "$strategy: FAILED (tail of $dir/log.txt)"; tail -n 25 "$dir/log.txt"; status=1; continue; fi
    python3 - "$dir" "$strategy" "$start" "$end" <<'PY'
import json, sys
from pathlib import Path
directory, strategy, start, end = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
ranks = [json.loads(p.read_text()) for p in sorted(directory.glob("rank_*.json"))]
for rank in ranks:
    steps = rank["steps"]
    print(f"{strategy:<6} rank {rank['rank']}: {len(steps)} steps, {rank['seconds_per_step']:.2f} s/step after the first, "
          f"peak {rank['peak_memory_gib']:.2f} GiB, checksum {rank['checksum']:.6e}")
print(f"{strategy:<6} wall {end - start:.0f} s for the whole command")
PY
    checkpoint=$(find "$dir/checkpoints" -maxdepth 1 -name '*.ckpt' | sort | tail -n 1)
    if [ -z "$checkpoint" ]; then echo "$strategy: no checkpoint saved under $dir/checkpoints"; status=1; continue; fi
    python3 main.py validate \
        --config "$config" --config "configs/strategy/$strategy.yaml" --trainer.devices="$gpus" \
        --model.model_name_or_path="$model" --model.grpo.beta=$beta "${extra[@]}" \
        --trainer.limit_val_batches=1 --trainer.enable_progress_bar=false --trainer.callbacks=[] \
        --trainer.logger=false --trainer.default_root_dir="$dir" --ckpt_path="$checkpoint" > "$dir/validate.txt" 2>&1
    if [ $? -ne 0 ]; then echo "$strategy: validate --ckpt_path FAILED (tail of $dir/validate.txt)"; tail -n 25 "$dir/validate.txt"; status=1
    else echo "$strategy validate --ckpt_path $(basename "$checkpoint"): $(grep -m1 'val/accuracy ' "$dir/validate.txt" | tr -s ' │' ' ')"; fi
done
exit $status
