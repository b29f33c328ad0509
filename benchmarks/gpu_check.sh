#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU and a CUDA build of JAX 0.11 (with the course's
# other dependencies importable), run the package's statistical tests on the GPU, then the
# EM and sampler benchmarks; copies the results to $OUT (default /tmp/gmm-gpu).
#   bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gmm-gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=/tmp/gmm-jax-cache
PY=${PY:-python3}
$PY - <<'PY' | tee "$OUT/devices.txt"
import jax, genjax
print("jax", jax.__version__, "genjax", genjax.__version__ if hasattr(genjax, "__version__") else "?")
print("devices", jax.devices())
assert jax.devices()[0].platform == "gpu", "no GPU visible to JAX"
PY
[ "${PIPESTATUS[0]}" = 0 ] || exit 1
$PY -m pytest -q -p no:cacheprovider -m "not slow" tests/test_categorize.py tests/test_em.py \
    tests/test_exact_and_gibbs.py tests/test_data_models.py tests/test_exact_enum.py 2>&1 | tail -15 | tee "$OUT/tests.txt"
for b in em sampler; do
  $PY benchmarks/bench_$b.py > "$OUT/bench_$b.log" 2>&1 && cp benchmarks/results/$b.json "$OUT/$b-gpu.json"
  tail -3 "$OUT/bench_$b.log"
done
