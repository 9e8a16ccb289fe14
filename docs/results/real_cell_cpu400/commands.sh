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
# min_area auto (min_area_auto/): the fit step of today's train.yaml again on the trained model (a copy), then the test.
# A fresh run of the lines above does both already; this re-fits a model trained before min_area existed.
mkdir -p outputs/exp/cells_cpu400_minarea/models && cp outputs/exp/cells_cpu400/models/model.pt outputs/exp/cells_cpu400_minarea/models/
python -m monai.bundle run --config_file bundles/cell_instance_seg/configs/train.yaml \
  --dataset_dir outputs/usiigaci_all --init none --preset cpu --num_workers 0 \
  --ckpt_dir outputs/exp/cells_cpu400_minarea/models --output_dir outputs/exp/cells_cpu400_minarea/runs --run "['@run_steps#fit_h']"
python -m monai.bundle run \
  --config_file "['bundles/cell_instance_seg/configs/train.yaml','bundles/cell_instance_seg/configs/evaluate.yaml']" \
  --dataset_dir outputs/usiigaci_all --checkpoint outputs/exp/cells_cpu400_minarea/models/model.pt --output_dir outputs/exp/cells_cpu400_minarea/eval
date
# the figure docs/figures/real_cell_instance_seg.png (test field set27, the min_area auto model)
python docs/results/real_cell_cpu400/figure_set27.py outputs/usiigaci_all/cell_instance_seg.json \
  outputs/exp/cells_cpu400_minarea/models/model.pt outputs/exp/figure docs/figures/real_cell_instance_seg.png
