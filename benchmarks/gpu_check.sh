#!/usr/bin/env bash
# End-to-end check on a CUDA machine, from the repository root:
#   bash benchmarks/gpu_check.sh [out_dir]
# 1. the test suite (CPU parts) under the machine's torch/transformers versions;
# 2. fit through the CLI on the GPU with the tiny model in bf16;
# 3. fit with a randomly initialised model of SmolLM2-135M's architecture in bf16 at the
#    default config's shape, summarised (seconds per step, rollout tokens/s, peak memory).
set -euo pipefail
out=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$out"
python3 - <<'PY'
import torch, transformers, lightning
print("torch", torch.__version__, "transformers", transformers.__version__, "lightning", lightning.__version__)
print("device", torch.cuda.get_device_name(0))
PY
python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tail -n 15 || echo "TESTS FAILED"
common=(--trainer.accelerator=gpu --trainer.precision=bf16-true --model.dtype=bfloat16 --trainer.enable_progress_bar=false)
python3 main.py fit --config configs/smoke.yaml "${common[@]}" --trainer.default_root_dir="$out/smoke" \
    --trainer.max_steps=3 2>&1 | tail -n 3
python3 main.py fit --config configs/default.yaml "${common[@]}" \
    --model.model_name_or_path=random:SmolLM2-135M-Instruct \
    --trainer.max_steps=8 --trainer.val_check_interval=8 --trainer.limit_val_batches=1 --trainer.callbacks=[] \
    --trainer.logger.init_args.save_dir="$out/random135m" --trainer.default_root_dir="$out/random135m" 2>&1 | tail -n 3
run=$(ls -d "$out"/random135m/mot_grpo/version_* | tail -n 1)
python3 benchmarks/summarize_run.py "$run" --window 4 --json "$out/random135m_summary.json"
python3 - "$run" <<'PY'
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
events = EventAccumulator(sys.argv[1]); events.Reload()
print("peak_memory_gib", max(e.value for e in events.Scalars("train/peak_memory_gib")))
PY
