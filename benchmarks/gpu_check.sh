#!/usr/bin/env bash
# The GPU figures in one go, under 8 minutes on one H100/H200 (CUDA tests capped at 2.5 min, the bench at 5 min):
#   1. the CUDA tests (GPU merging == CPU merging; fresh run == re-prompt from cached states in fp16),
#   2. zsdseg bench on random:sd15, 512 px, 300 slices, fp16: first run, re-prompt from the query cache,
#      pipeline/bare ratio, peak GPU memory, MB per cached slice,
#   3. one JSON ($OUT/gpu_check.json) with both, to paste into benchmarks/README.md.
# Run from the repository root with the project installed (or PYTHONPATH=ZeroShotDiffusionSeg).
#   OUT (default gpu-check), SLICES (300), BATCH (16).
set -euo pipefail
OUT=${OUT:-gpu-check}
SLICES=${SLICES:-300}
BATCH=${BATCH:-16}
mkdir -p "$OUT"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh: no CUDA GPU visible to torch')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" || true

tests_rc=0
timeout 150 python -m pytest -q -rs ZeroShotDiffusionSeg/Testing/pytest/test_engine_merging.py \
  ZeroShotDiffusionSeg/Testing/pytest/test_engine_prompt_maps.py -k cuda \
  --junitxml "$OUT/cuda-tests.xml" 2>&1 | tee "$OUT/cuda-tests.log" || tests_rc=$?

timeout 300 python -m ZeroShotDiffusionSegLib.cli bench --model random:sd15 --size 512 --slices "$SLICES" \
  --batch-size "$BATCH" --device cuda --dtype fp16 --out "$OUT/bench-sd15-cuda-fp16.json" 2>&1 | tee "$OUT/bench.log"

python - "$OUT" "$tests_rc" <<'PY'
import json, pathlib, sys
out, tests_rc = pathlib.Path(sys.argv[1]), int(sys.argv[2])
bench = json.loads((out / "bench-sd15-cuda-fp16.json").read_text())
keys = ("date", "device", "dtype", "slices", "batch_size", "total_s", "per_slice_s", "ratio_pipeline_to_bare",
        "reprompt_s", "reprompt_query_cache", "ratio_reprompt_to_first_run", "cuda_max_allocated_mb",
        "cache_mb_per_slice", "cache_disk_mb_per_slice", "worker_cache_gb_for_300_slices", "peak_rss_mb")
summary = {"gpu": (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").exists() else None,
           "cuda_tests_passed": tests_rc == 0, "bench": {key: bench.get(key) for key in keys}}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
sys.exit(tests_rc)
PY
