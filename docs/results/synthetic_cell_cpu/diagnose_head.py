"""Why an ISL cell run failed: the ISL network's 1-channel output and the head's distance scale, before and after
fine-tuning, on each seed's one training field.

    python docs/results/synthetic_cell_cpu/diagnose_head.py outputs/sweeps/synthetic_cell_cpu

Prints per seed: the std of the pretext (cellmask_isl) output and its correlation with the cell mask, the std of
the same output after fine-tuning (``checkpoint_final.pt``), the 99th percentile of the predicted distance (target
scale: 0..255) and the fraction of pixels the predicted mask covers (against the labels' foreground).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tifffile
import torch

from monai_isl.networks import cell_network
from monai_isl.networks.transfer import head_channels_of_checkpoint
from monai_isl.transforms.field import channel_percentiles, scale_by_percentiles

#: cell_instance_seg's ``input_percentiles`` (bundles/cell_instance_seg/configs/train.yaml)
INPUT_PERCENTILES = (1.0, 99.8)


def main(root: str) -> None:
    torch.set_num_threads(1)
    pretext = f"{root}/pretext/models/model.pt"
    for seed in (0, 1, 2):
        item = json.load(open(f"{root}/splits/N1_seed{seed}.json"))["training"][0]
        img = tifffile.imread(item["image"][0]).astype(np.float32)
        # the bundle's input scaling (input_percentiles 1, 99.8), with the bundle's own functions
        stats = channel_percentiles(img.reshape(1, -1), INPUT_PERCENTILES)
        x = torch.from_numpy(scale_by_percentiles(img[None], stats))[None].float()
        final = f"{root}/runs/cell_N1_isl_seed{seed}/models/checkpoint_final.pt"
        net = cell_network(1, "isl", pretext, head_channels=head_channels_of_checkpoint(final)).eval()
        with torch.no_grad():
            start = net[0](x)
        net.load_state_dict(torch.load(final, weights_only=False)["model"])
        net.eval()
        with torch.no_grad():
            tuned, out = net[0](x), net(x)
        mask = tifffile.imread(item["label"]) > 0
        pcc = np.corrcoef(start.flatten().numpy(), mask.flatten())[0, 1]
        print(
            f"seed {seed} ({item['name']}): ISL output std {float(start.std()):.3f} at the start (PCC with the cell "
            f"mask {pcc:.2f}), {float(tuned.std()):.3f} after fine-tuning; predicted distance p99 "
            f"{float(out[:, 0].quantile(0.99)):.1f}; mask covers {float((out[:, 1] > 0).float().mean()):.3f} "
            f"(labels {mask.mean():.3f})"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/sweeps/synthetic_cell_cpu")
