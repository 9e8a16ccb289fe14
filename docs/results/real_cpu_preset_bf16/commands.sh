#!/bin/bash
# The README's real-data results re-run at the cpu preset's full budgets with precision auto (bf16 on a CPU with
# AVX512-BF16 or AMX; fp32 elsewhere: the log's first lines say which). Each step is resumable: the bundles with
# --resume true, the sweep by itself (a finished run is never retrained). 1 thread per process; the pretext and the
# random-init arm ran side by side, then the two halves of the ISL arm beside the
# cells (seed 0, then seed 1).
#   bash docs/results/real_cpu_preset_bf16/commands.sh pretext | none | isl0 | isl1 | report | cells | cells_seed1 | cells_seed2 | checks | figures
set -e
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
[ -f .venv/bin/activate ] && . .venv/bin/activate
E=outputs/bf16
S=outputs/sweeps/real_nucleus_bf16
SWEEP="python -m monai_isl sweep --task nucleus --dataset outputs/isl_nuclei_256 --preset cpu --sizes 1 --out $S"
case "$1" in
  pretext)  # dapi_isl on the top half of the ISL sample: 2,000 steps of 5 crops of 256x256, ~10 validations
    python -m monai_isl prepare isl_example --src ../shared/data/isl_condition_b --out outputs/isl_condition_b
    python -m monai.bundle run --config_file bundles/dapi_isl/configs/train.yaml --dataset_dir outputs/isl_condition_b \
      --preset cpu --num_workers 0 --ckpt_dir $E/pretext_dapi/models --output_dir $E/pretext_dapi/runs "${@:2}"
    python -m monai.bundle run \
      --config_file "['bundles/dapi_isl/configs/train.yaml','bundles/dapi_isl/configs/evaluate.yaml']" \
      --dataset_dir outputs/isl_condition_b --checkpoint $E/pretext_dapi/models/model.pt --output_dir $E/pretext_dapi/eval ;;
  none)     # nucleus_seg from random weights, one annotated tile, the preset's 400 steps, 3 seeds
    python docs/results/real_nucleus_cpu/make_tiles.py outputs/isl_condition_b outputs/isl_nuclei_256
    $SWEEP --inits none --seeds 0,1,2 ;;
  isl0)     # nucleus_seg from the pretext above (calibrated transfer), seeds 0 and 1
    $SWEEP --inits isl --seeds 0,1 --isl_checkpoint $E/pretext_dapi/models/model.pt ;;
  isl1)     # ... and seed 2, beside isl0
    $SWEEP --inits isl --seeds 2 --isl_checkpoint $E/pretext_dapi/models/model.pt ;;
  report)   # the joint summary.md over both arms
    $SWEEP --inits isl,none --seeds 0,1,2 --isl_checkpoint $E/pretext_dapi/models/model.pt --report_only true ;;
  cells)    # cell_instance_seg on the never-tuned split of ../real_cell_generalisation (outputs/exp/new_bf16)
    bash docs/results/real_cell_generalisation/commands.sh new_bf16 "${@:2}" ;;
  cells_seed1 | cells_seed2)  # the same with another seed (outputs/exp/new_bf16_seed1, _seed2): the spread
    bash docs/results/real_cell_generalisation/commands.sh new_bf16_${1#cells_} --seed ${1#cells_seed} "${@:2}" ;;
  checks)   # the same networks in fp32 (dapi_test_pcc.csv, cell ..._fp32_inference.csv) and the diagnostic of README.md
    python -c "import torch; torch.save(torch.load('$E/pretext_dapi/models/checkpoint_final.pt', weights_only=False)['model'], '$E/pretext_dapi/final_model.pt')"
    for c in models/model.pt final_model.pt; do for p in fp32 bf16; do   # the kept (step 400) and the final network
      python -m monai.bundle run --config_file "['bundles/dapi_isl/configs/train.yaml','bundles/dapi_isl/configs/evaluate.yaml']" \
        --dataset_dir outputs/isl_condition_b --checkpoint $E/pretext_dapi/$c --precision $p \
        --output_dir $E/pretext_dapi/eval_${p}_$(basename $c .pt)
    done; done
    python -m monai.bundle run \
      --config_file "['bundles/cell_instance_seg/configs/train.yaml','bundles/cell_instance_seg/configs/evaluate.yaml']" \
      --dataset_dir outputs/usiigaci_split --checkpoint outputs/exp/new_bf16/models/model.pt --precision fp32 \
      --output_dir outputs/exp/new_bf16/eval_fp32 --cache_dir outputs/exp/new_bf16/cache
    python -m monai_isl sweep --task nucleus --dataset outputs/isl_nuclei_256 --preset cpu --sizes 1 --inits isl \
      --seeds 0,1 --steps 1 --isl_checkpoint $E/pretext_dapi/final_model.pt --out outputs/sweeps/diag_final_pretext ;;
  figures)  # docs/figures/real_dapi_isl.png and docs/figures/real_cell_instance_seg.png
    python docs/results/real_cpu_preset_bf16/dapi_figure.py outputs/isl_condition_b $E/pretext_dapi/models/model.pt \
      $E/dapi_figure docs/figures/real_dapi_isl.png
    python docs/results/real_cell_cpu400/figure_set27.py outputs/usiigaci_split/cell_instance_seg.json \
      outputs/exp/new_bf16/models/model.pt $E/cell_figure docs/figures/real_cell_instance_seg.png "${FIELD:-set04}" ;;
    # FIELD: the never-tuned field whose mAP is nearest the mean of the six (set04 for seed 0)
  *) echo "usage: $0 pretext|none|isl0|isl1|report|cells|cells_seed1|cells_seed2|checks|figures [extra bundle arguments]" >&2; exit 2 ;;
esac
