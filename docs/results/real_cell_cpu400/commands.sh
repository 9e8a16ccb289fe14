#!/bin/bash
# Usiigaci cells, random init, all 24 training fields, --preset cpu (its full 400-step budget: 17 epochs of 24
# fields = 408 steps), h auto fitted on the training fields; then the test evaluation on set25-set30.
# Data: python -m monai_isl prepare usiigaci --src ../shared/data/usiigaci --out outputs/usiigaci_all --train 1-24 --validation "" --test 25-30
cd "$(dirname "$0")/../../.."
date
MONAI_ISL_DEVICE=cpu python -m monai.bundle run --config_file bundles/cell_instance_seg/configs/train.yaml \
  --dataset_dir outputs/usiigaci_all --init none --preset cpu --num_workers 0 --curve_section test \
  --ckpt_dir outputs/exp/cells_cpu400/models --output_dir outputs/exp/cells_cpu400/runs
date
MONAI_ISL_DEVICE=cpu python -m monai.bundle run \
  --config_file "['bundles/cell_instance_seg/configs/train.yaml','bundles/cell_instance_seg/configs/evaluate.yaml']" \
  --dataset_dir outputs/usiigaci_all --checkpoint outputs/exp/cells_cpu400/models/model.pt --output_dir outputs/exp/cells_cpu400/eval
date
