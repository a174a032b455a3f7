#!/usr/bin/env bash
# The issue-7 figures in one device run (a bare GPU machine: torch + numpy + pyarrow, no Dagster).
#
# Prepare here (CPU machine, ~25 min for the FEID):
#   PYTHONPATH=. .venv/bin/python bench/feid_fer2013.py --work .data/fer_feid
#   PYTHONPATH=. .venv/bin/python bench/pack_fer.py --feid-lake .data/fer_feid/lake --out .data/feid/feid_48.npz
# Then with the device tool, carrying .data:
#   bash bench/gpu_session.sh .data/feid 150
#
# Runs: training throughput GPU vs CPU (RESULT gpu_cpu_ratio=…), the full recipe on FEID with all
# granularities (RESULT fer_val_acc=…), and the same recipe on human expression labels only
# (the ablation). Each training run gets TRAIN_S seconds; summaries land in $OUT.
set -u
NPZ=${1:-.data/feid}
TRAIN_S=${2:-150}
OUT=${OUT:-out/gpu_session}
mkdir -p "$OUT"
export PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 bench/train_throughput.py --npz "$NPZ" --cpu-steps 2 2>&1 | tee "$OUT/throughput.txt"
python3 bench/train_fer.py --npz "$NPZ" --time-limit "$TRAIN_S" --epochs 60 --out "$OUT/feid" \
  2>&1 | tee "$OUT/feid.txt" | grep -E "epoch (1|10|20|30|40|50|60)/|evaluation|RESULT|time limit|leak"
python3 bench/train_fer.py --npz "$NPZ" --time-limit "$TRAIN_S" --epochs 60 --ablation --out "$OUT/ablation" \
  2>&1 | tee "$OUT/ablation.txt" | grep -E "epoch (1|10|20|30|40|50|60)/|evaluation|RESULT|time limit|leak"
grep -h RESULT "$OUT"/*.txt
