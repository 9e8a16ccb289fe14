#!/bin/bash
# Usiigaci cells, random init, all 24 training fields, --preset cpu; then test evaluation (h auto)
cd /work/main
while pgrep -f sweep_nuc.sh > /dev/null; do sleep 15; done
date
MONAI_ISL_DEVICE=cpu python -m monai.bundle run --config_file bundles/cell_instance_seg/configs/train.yaml \
  --dataset_dir outputs/usiigaci_all --init none --preset cpu --train_steps 200 --num_workers 0 --curve_section test \
  --ckpt_dir outputs/exp/cells_cpu/models --output_dir outputs/exp/cells_cpu/runs
date
MONAI_ISL_DEVICE=cpu python -m monai.bundle run \
  --config_file "['bundles/cell_instance_seg/configs/train.yaml','bundles/cell_instance_seg/configs/evaluate.yaml']" \
  --dataset_dir outputs/usiigaci_all --checkpoint outputs/exp/cells_cpu/models/model.pt --output_dir outputs/exp/cells_cpu/eval
date
