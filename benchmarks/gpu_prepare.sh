#!/usr/bin/env bash
# Prepare, on the CPU machine, what benchmarks/gpu_paper_nucleus_n1.py needs on a GPU machine that reaches nothing:
# the real sample (../shared does not travel there) and wheels of the packages its image lacks (it has torch, numpy,
# scipy, scikit-image, tifffile, pyyaml, matplotlib, tensorboard; not MONAI, ignite or fire). Writes outputs/gpu/
# (~20 MB, git-ignored), then prints the device command.
set -euo pipefail
cd "$(dirname "$0")/.."
out=outputs/gpu
python -m monai_isl prepare isl_example --src "${SHARED:-../shared}/data/isl_condition_b" --out "$out/isl_condition_b"
python docs/results/real_nucleus_cpu/make_tiles.py "$out/isl_condition_b" "$out/isl_nuclei_256"
pip download -q --no-deps --only-binary :all: -d "$out/wheels" monai==1.6.1 pytorch-ignite==0.5.5 fire==0.7.1 termcolor==3.3.0
du -sh "$out"
cat <<'CMD'
device command (carry ["outputs/gpu"], timeout_s 600; ~7 min of it):
set -o pipefail; python3 -m pip install -q --no-deps --no-index outputs/gpu/wheels/*.whl && PYTHONUNBUFFERED=1 PYTHONPATH=$PWD python3 benchmarks/gpu_paper_nucleus_n1.py --report_dir $OUT 2>&1 | tee $OUT/log.txt
CMD
