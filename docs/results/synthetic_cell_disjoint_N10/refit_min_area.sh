#!/bin/bash
# Re-fit h + min_area (today's fit step) on the N=10 seed 0 synthetic cell models, then their test evaluation.
# the N = 10 sweep wrote to outputs/sweeps/synthetic_cell_disjoint (summary.md, first line)
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MONAI_ISL_DEVICE=cpu
S=outputs/sweeps/synthetic_cell_disjoint
for init in isl none; do
  R=outputs/exp/refit_N10/$init; mkdir -p $R/models; cp $S/runs/cell_N10_${init}_seed0/models/model.pt $R/models/
  extra=""; [ $init = isl ] && extra="--isl_checkpoint $S/pretext/models/model.pt"
  date
  python -m monai.bundle run --config_file bundles/cell_instance_seg/configs/train.yaml --num_workers 0 \
    --datalist $S/splits/N10_seed0.json --seed 0 --init $init $extra --ckpt_dir $R/models --output_dir $R/logs --run "['@run_steps#fit_h']"
  python -m monai.bundle run --config_file "['bundles/cell_instance_seg/configs/train.yaml','bundles/cell_instance_seg/configs/evaluate.yaml']" \
    --datalist $S/splits/N10_seed0.json --section test --checkpoint $R/models/model.pt --output_dir $R/eval
done
date
