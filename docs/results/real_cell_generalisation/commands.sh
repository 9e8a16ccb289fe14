#!/bin/bash
# The reference run on the never-tuned split (README.md here): today's defaults (random init: no stain to pretrain
# on; --preset cpu, its full budget; precision auto = bf16 on this CPU; no validation section, so the fine-tune
# guard holds out the bottom 20 % of each of the 24 training fields for model selection and the h / min_area fit),
# then the one evaluation on set04, 09, 14, 19, 24, 29. Add --resume true to the training line after an interruption.
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MONAI_ISL_DEVICE=cpu
python -m monai_isl prepare usiigaci --src ../shared/data/usiigaci --out outputs/usiigaci_split \
  --train 1-3,5-8,10-13,15-18,20-23,25-28,30 --validation "" --test 4,9,14,19,24,29
date
python -m monai.bundle run --config_file bundles/cell_instance_seg/configs/train.yaml \
  --dataset_dir outputs/usiigaci_split --init none --preset cpu --num_workers 0 \
  --ckpt_dir outputs/exp/cells_split/models --output_dir outputs/exp/cells_split/runs "$@"
date
python -m monai.bundle run \
  --config_file "['bundles/cell_instance_seg/configs/train.yaml','bundles/cell_instance_seg/configs/evaluate.yaml']" \
  --dataset_dir outputs/usiigaci_split --checkpoint outputs/exp/cells_split/models/model.pt \
  --output_dir outputs/exp/cells_split/eval
date
