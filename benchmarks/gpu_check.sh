#!/usr/bin/env bash
# One-shot GPU check of pallas_kernels.attention (compiled, not interpreted), < 8 min on one
# H100/H200:
#   1. the kernel correctness tests with implementation="pallas" (Triton lowering), f32;
#   2. the benchmark sweep (seq 1k/4k/16k, head_dim 64/128, bf16, causal and not; Pallas vs XLA vs
#      cuDNN vs tokamax where installed; fwd, fwd+bwd, fwd+JVP);
#   3. benchmarks/gpu_models.py: DiT-B/2 bf16 training-step MFU with Pallas vs XLA attention, and a
#      MeanFlow step (JVP through the DiT) with the Pallas JVP attention kernel vs the XLA JVP path;
#   4. benchmarks/rollout.py: the fused Pallas rollout kernel vs the unfused XLA scan and the plain
#      flowmap sampler.
# Time budget (timeouts): 140 + 140 + 150 + 40 s = 470 s < 8 min.
# Writes one JSON to $OUT/gpu_check_results.json when $OUT is set, else ./gpu_check_results.json.
# Usage: bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
DEST_DIR="${OUT:-.}"
mkdir -p "$DEST_DIR"
RESULT="$DEST_DIR/gpu_check_results.json"
LOG="$DEST_DIR/gpu_check_pytest.log"
BENCH="$DEST_DIR/gpu_check_bench.json"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cuda}"   # tests/conftest.py only sets cpu if unset
export ATTN_TEST_IMPLS=pallas                   # run only the compiled variants of the kernel tests
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)

(nvidia-smi -L || true) > "$DEST_DIR/gpu_check_device.txt" 2>&1
python -c "import jax; print(jax.__version__, jax.devices())" >> "$DEST_DIR/gpu_check_device.txt" 2>&1

timeout 140 python -m pytest tests/pallas_kernels/test_attention.py -q -p no:cacheprovider -rA > "$LOG" 2>&1
TEST_RC=$?

timeout 140 python -m benchmarks.attention --quick --budget-s 100 --out "$BENCH" > "$DEST_DIR/gpu_check_bench.log" 2>&1
BENCH_RC=$?

MODELS="$DEST_DIR/gpu_check_models.json"
timeout 150 python -m benchmarks.gpu_models --iters 5 --out "$MODELS" > "$DEST_DIR/gpu_check_models.log" 2>&1
MODELS_RC=$?

ROLLOUT="$DEST_DIR/gpu_check_rollout.json"
timeout 40 python -m benchmarks.rollout --batch 65536 --reps 5 --out "$ROLLOUT" > "$DEST_DIR/gpu_check_rollout.log" 2>&1
ROLLOUT_RC=$?

python - "$RESULT" "$LOG" "$BENCH" "$TEST_RC" "$BENCH_RC" "$START" "$DEST_DIR/gpu_check_device.txt" \
  "$MODELS" "$MODELS_RC" "$ROLLOUT" "$ROLLOUT_RC" <<'PY'
import json, re, sys, time
result, log, bench, test_rc, bench_rc, start, dev, models, models_rc, rollout, rollout_rc = sys.argv[1:]
text = open(log).read() if log else ""
counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", text.splitlines()[-1] if text else "")}
out = {
    "pytest": {"rc": int(test_rc), "counts": counts,
               "failures": [l for l in text.splitlines() if l.startswith(("FAILED", "ERROR"))][:50],
               "log_tail": text[-4000:]},
    "bench_rc": int(bench_rc),
    "device": open(dev).read().strip(),
    "seconds": time.time() - float(start),
}
try:
    out["bench"] = json.load(open(bench))
except Exception as e:  # benchmark crashed or timed out before writing
    out["bench"] = {"error": repr(e)}
for key, path, rc in (("models", models, models_rc), ("rollout", rollout, rollout_rc)):
    out[key + "_rc"] = int(rc)
    try:
        out[key] = json.load(open(path))
    except Exception as e:  # crashed or timed out before writing
        out[key] = {"error": repr(e)}
out["seconds"] = time.time() - float(start)
json.dump(out, open(result, "w"), indent=1)
print(json.dumps({"pytest": out["pytest"]["counts"], "summary": out["bench"].get("summary"),
                  "models": out["models"].get("summary"), "rollout_rows": out["rollout"].get("rows"),
                  "seconds": out["seconds"]}, indent=1))
PY
echo "wrote $RESULT"
