#!/bin/bash
# The training runs on the never-tuned split (README.md here): random init (no stain to pretrain on), --preset cpu
# and its full budget (408 steps), precision auto, no validation section (the fine-tune guard holds out the bottom
# 20 % of each of the 24 training fields for model selection and the h / min_area fit), then the one evaluation on
# set04, 09, 14, 19, 24, 29.
#   bash docs/results/real_cell_generalisation/commands.sh new          # today's code (outputs/exp/new)
#   git worktree add --detach ../base 7363324        # the code before this change, then:
#   CODE=../base bash docs/results/real_cell_generalisation/commands.sh base         # (outputs/exp/base)
# The two ran side by side, 1 thread each. Add --resume true after an interruption. Then refit.py (the other
# minimum area on the same models), shifted.sh and scaled.sh (the stress test), summarise.py (the table).
NAME=${1:-new}; shift
MAIN="$(cd "$(dirname "$0")/../../.." && pwd)"   # this checkout: outputs/, the venv, ../shared
CODE="$(cd "${CODE:-$MAIN}" && pwd)"               # the code that trains (python -m runs from its root)
cd "$CODE"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MONAI_ISL_DEVICE=cpu
[ -f "$MAIN/.venv/bin/activate" ] && . "$MAIN/.venv/bin/activate"
E="$MAIN/outputs/exp/$NAME"
python -m monai_isl prepare usiigaci --src "$MAIN/../shared/data/usiigaci" --out "$MAIN/outputs/usiigaci_split" \
  --train 1-3,5-8,10-13,15-18,20-23,25-28,30 --validation "" --test 4,9,14,19,24,29
date
python -m monai.bundle run --config_file bundles/cell_instance_seg/configs/train.yaml \
  --dataset_dir "$MAIN/outputs/usiigaci_split" --init none --preset cpu --num_workers 0 \
  --ckpt_dir "$E/models" --output_dir "$E/runs" --cache_dir "$E/cache" "$@"
date
python -m monai.bundle run \
  --config_file "['bundles/cell_instance_seg/configs/train.yaml','bundles/cell_instance_seg/configs/evaluate.yaml']" \
  --dataset_dir "$MAIN/outputs/usiigaci_split" --checkpoint "$E/models/model.pt" \
  --output_dir "$E/eval" --cache_dir "$E/cache"
date
