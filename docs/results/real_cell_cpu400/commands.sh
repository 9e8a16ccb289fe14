#!/bin/bash
# Usiigaci cells, random init, all 24 training fields, --preset cpu (its full budget: 17 epochs of 24 fields = 408
# steps), learning curve on set25-set30 every 3 epochs, h auto fitted on the 24 training fields; then the test
# evaluation on set25-set30. Add --resume true to the training line after an interruption.
# Data: python -m monai_isl prepare usiigaci --src ../shared/data/usiigaci --out outputs/usiigaci_all --train 1-24 --validation "" --test 25-30
# Ran with 1 thread beside another 1-thread experiment on the 2 cores (drop the thread settings when it runs alone).
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MONAI_ISL_DEVICE=cpu
date
python -m monai.bundle run --config_file bundles/cell_instance_seg/configs/train.yaml \
  --dataset_dir outputs/usiigaci_all --init none --preset cpu --num_workers 0 --curve_section test --val_interval 3 \
  --ckpt_dir outputs/exp/cells_cpu400/models --output_dir outputs/exp/cells_cpu400/runs
date
python -m monai.bundle run \
  --config_file "['bundles/cell_instance_seg/configs/train.yaml','bundles/cell_instance_seg/configs/evaluate.yaml']" \
  --dataset_dir outputs/usiigaci_all --checkpoint outputs/exp/cells_cpu400/models/model.pt --output_dir outputs/exp/cells_cpu400/eval
date
