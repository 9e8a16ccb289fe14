#!/bin/bash
# The stress test (shifted_fields.py): each model of the comparison scored once on each shifted copy of the six
# never-tuned fields, two evaluations side by side (1 thread each). Models: outputs/exp/{base,new}/models/model.pt
# from commands.sh, outputs/exp/{base_relative,new_pixels}/models/model.pt from refit.py.
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MONAI_ISL_DEVICE=cpu
python docs/results/real_cell_generalisation/shifted_fields.py --out outputs/usiigaci_shifted
evaluate() {  # model condition
  python -m monai.bundle run \
    --config_file "['bundles/cell_instance_seg/configs/train.yaml','bundles/cell_instance_seg/configs/evaluate.yaml']" \
    --dataset_dir "outputs/usiigaci_shifted/$2" --checkpoint "outputs/exp/$1/models/model.pt" \
    --output_dir "outputs/exp/shifted/$1_$2" > "outputs/exp/shifted/$1_$2.log" 2>&1
}
mkdir -p outputs/exp/shifted
for condition in smaller larger contrast; do
  evaluate base "$condition" & evaluate new "$condition"; wait
  evaluate base_relative "$condition" & evaluate new_pixels "$condition"; wait
done
