#!/bin/bash
# Cell-size resampling (monai_isl/scale.py) on the comparison's two trained models: refit with today's fit (which
# now stores the trained size range) and score as imaged and on each shifted copy (shifted_fields.py), the two
# models side by side, 1 thread each.
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MONAI_ISL_DEVICE=cpu
[ -f .venv/bin/activate ] && . .venv/bin/activate
run() {  # trained-model scaled-name
  [ -f "outputs/exp/$2/models/model.pt" ] || python docs/results/real_cell_generalisation/refit.py \
    "outputs/exp/$1/models/model.pt" "outputs/exp/$2" > "outputs/exp/$2.log" 2>&1  # the fit, and eval/ as imaged
  [ -f "outputs/exp/$2/eval/test_ap_table.csv" ] || evaluate "$2" outputs/usiigaci_split "outputs/exp/$2/eval"
  for condition in smaller larger contrast; do
    evaluate "$2" "outputs/usiigaci_shifted/$condition" "outputs/exp/shifted/$2_$condition"
  done
}
evaluate() {  # model dataset_dir output_dir
  python -m monai.bundle run \
    --config_file "['bundles/cell_instance_seg/configs/train.yaml','bundles/cell_instance_seg/configs/evaluate.yaml']" \
    --dataset_dir "$2" --checkpoint "outputs/exp/$1/models/model.pt" --output_dir "$3" > "$3.log" 2>&1
}
mkdir -p outputs/exp/shifted
run new new_scaled & run base base_scaled; wait
