#!/usr/bin/env bash
# gpu_check.sh: is keras-dreamer ready for a GPU? One script, both backends.
#
#   benchmarks/gpu_check.sh                 # on a machine with one NVIDIA GPU
#   benchmarks/gpu_check.sh --cpu           # the same checks on a CPU, smaller
#
# Steps (each timed; a failure stops the script with its exit code):
#   1. install what is missing from the project's own files:
#      GPU: pip install -e ".[gpu,dev]" (jax[cuda12], tensorflow[and-cuda]);
#      CPU: pip install -e ".[jax,tensorflow,dev]". Skipped when everything
#      already imports (and always with --no-install).
#   2. check that each backend sees the device (GPU mode: fails if not);
#   3. the test suite's fast subset (-m "not slow") on JAX, then TensorFlow;
#   4. the world-model and agent updates (benchmarks/agent_step.py) at
#      size12m and size50m on B16 x T64 (CPU: size1m on B8 x T32): update
#      time, compile (first step), peak RSS and device memory, GFLOP/s and
#      its share of the matmul ceiling measured in the same process.
#
# Options:
#   --cpu               run on the CPU (smaller presets, fewer steps)
#   --no-install        never run pip
#   --tests ARGS        pytest arguments instead of the fast subset, e.g.
#                       --tests "tests/test_ops.py tests/test_layers.py"
#   --no-tests          skip step 3
#   --presets "A B"     presets of step 4
#   --steps N           timed updates per configuration in step 4
#
# On a GPU machine it is sized to finish in under 8 minutes (tests in
# parallel with pytest-xdist; 3 timed updates per configuration). Use a fresh
# virtual environment there: tensorflow[and-cuda] and tensorflow-cpu cannot
# be installed side by side.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=gpu
INSTALL=1
RUN_TESTS=1
TEST_ARGS=""
PRESETS=""
STEPS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu) MODE=cpu ;;
    --no-install) INSTALL=0 ;;
    --tests) TEST_ARGS="$2"; shift ;;
    --no-tests) RUN_TESTS=0 ;;
    --presets) PRESETS="$2"; shift ;;
    --steps) STEPS="$2"; shift ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

PY=${PYTHON:-python}
START=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - START ))s] $*"; }

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=2
if [[ $MODE == gpu ]]; then
  # Several processes share the GPU (pytest-xdist workers): allocate as needed.
  export XLA_PYTHON_CLIENT_PREALLOCATE=false
  export TF_FORCE_GPU_ALLOW_GROWTH=true
  PRESETS=${PRESETS:-"size12m size50m"}
  STEPS=${STEPS:-3}
  BATCH="--batch 16 --length 64"
  WORKERS=8
else
  export CUDA_VISIBLE_DEVICES=""
  PRESETS=${PRESETS:-"size1m"}
  STEPS=${STEPS:-2}
  BATCH="--batch 8 --length 32"
  WORKERS=2
fi

step "machine ($MODE mode)"
lscpu 2>/dev/null | grep -E "^Model name|^CPU\(s\)" || true
if [[ $MODE == gpu ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || {
    echo "gpu_check.sh: nvidia-smi failed: no usable NVIDIA GPU (use --cpu)" >&2
    exit 3
  }
fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

step "1. install"
if [[ $MODE == gpu ]]; then EXTRAS="gpu,dev"; else EXTRAS="jax,tensorflow,dev"; fi
have_all() {
  "$PY" - "$MODE" <<'EOF'
import importlib, sys
mods = ["jax", "tensorflow", "keras", "gin", "pytest"]
if sys.argv[1] == "gpu":
    mods.append("jax_cuda12_plugin")
for name in mods:
    importlib.import_module(name)
EOF
}
if [[ $INSTALL == 1 ]] && ! have_all 2>/dev/null; then
  echo "pip install -e \".[$EXTRAS]\""
  "$PY" -m pip install -q -e ".[$EXTRAS]"
else
  echo "skipped (everything imports, or --no-install)"
fi
"$PY" -c "import jax, keras, tensorflow as tf; print('keras', keras.__version__, '| jax', jax.__version__, '| tensorflow', tf.__version__)"

step "2. devices"
"$PY" - "$MODE" <<'EOF'
import sys
mode = sys.argv[1]
import jax
import tensorflow as tf
jax_devices = jax.devices()
tf_gpus = tf.config.list_physical_devices("GPU")
print("jax:", jax.default_backend(), jax_devices)
print("tensorflow GPUs:", tf_gpus)
if mode == "gpu":
    problems = []
    if jax.default_backend() != "gpu":
        problems.append("JAX does not see the GPU (jax[cuda12] installed?)")
    if not tf_gpus:
        problems.append("TensorFlow does not see the GPU (tensorflow[and-cuda] installed?)")
    if problems:
        sys.exit("gpu_check.sh: " + "; ".join(problems))
EOF

if [[ $RUN_TESTS == 1 ]]; then
  if [[ -z $TEST_ARGS ]]; then
    TEST_ARGS="-m 'not slow' -n $WORKERS"
  fi
  for backend in jax tensorflow; do
    step "3. tests on $backend: pytest $TEST_ARGS"
    eval "KERAS_BACKEND=$backend $PY -m pytest -q -p no:cacheprovider $TEST_ARGS"
  done
fi

step "4. world-model and agent updates: $PRESETS, $STEPS timed steps"
# shellcheck disable=SC2086
"$PY" benchmarks/agent_step.py --presets $PRESETS --steps "$STEPS" $BATCH \
  --backends jax tensorflow --policy-calls 10

step "done in $(( $(date +%s) - START ))s ($MODE mode); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
