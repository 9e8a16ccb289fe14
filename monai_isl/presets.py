"""Training schedules counted as the paper counts them (Supplementary Tables 1-2): in optimiser steps.

The paper trains every model on 512x512 crops, 5 per image and epoch, in batches of 10, and gives each schedule as
"training samples" and epochs. The tables' arithmetic shows that a "training sample" there is one optimiser step
(one batch): DAPI pretext, 384 images x 5 crops / 10 per batch x 1000 epochs = 192,000; CellMask, ceil(65 x 5 / 10)
= 33 batches x 4000 epochs = 132,000; ISL nuclei at N = 10, 20,000 / (50 crops / 10) = 4,000 epochs, at N = 1
(5 crops, one batch per epoch) 20,000 epochs. So the budgets here are **steps**; epochs follow from N:
``ceil(steps / ceil(N / images_per_batch))``. Counting steps keeps the amount of training the same whatever N is.
The bundles and ``sweep`` take one of these presets (``--preset``):

- ``paper``: Supplementary Tables 1-2 verbatim (samples per N and init, learning rates, 512 crops, batch 10).
  Meant for a GPU.
- ``cpu``: scaled to a 2-core CPU: 256x256 crops (several whole cells or a dozen nuclei each), batches of 5
  crops (one image), 400 steps per segmentation run, and the learning rates measured to keep the ISL prior
  (docs/results/README.md, ``benchmarks/bench_nucleus_transfer.py``). Measured run time, 1 thread beside one other
  such run on the 2 cores: 400 cell steps 40 min at N = 1 (docs/results/real_cell_cpu_N1_N10), 200 nucleus steps
  19 min at N = 10 (docs/results/synthetic_nucleus_disjoint): longer than the ~15 min per N = 1 run the preset was
  meant to fit. Evaluation and the learning curve come on top.
- ``quick``: a smoke test (128x128 crops, 40 steps): checks that a run goes end to end; not a result.

``auto`` (the bundles' default) is ``paper`` on a CUDA device and ``cpu`` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: the bundles' training tasks
PRETEXT_BUNDLES = ("dapi_isl", "cellmask_isl")
SEGMENTATION_BUNDLES = ("nucleus_seg", "cell_instance_seg")


@dataclass(frozen=True)
class Preset:
    """One schedule: crop size, crops per image per epoch, crops per optimiser step, step budgets, learning rates."""

    name: str
    roi: int
    num_samples: int
    batch_crops: int
    #: (bundle, init) -> optimiser steps (the paper's "training samples"); "*" matches any; see :func:`training_steps`
    steps: dict[tuple[str, str], int]
    #: (bundle, init) -> learning rate
    learning_rates: dict[tuple[str, str], float]
    #: nucleus_seg baseline (imagenet/none) from this N on: the larger budget (paper: 10,000 at N >= 50)
    large_n: int = 50
    large_n_steps: int | None = None


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        roi=512,
        num_samples=5,
        batch_crops=10,
        steps={
            ("dapi_isl", "*"): 192_000,  # Supp. Table 1: 384 images, 1000 epochs
            ("cellmask_isl", "*"): 132_000,  # Supp. Table 2: 65 images, 4000 epochs
            ("nucleus_seg", "isl"): 20_000,  # every N
            ("nucleus_seg", "imagenet"): 5_000,  # N = 1, 2, 10; 10,000 at N >= 50 (large_n_steps)
            ("nucleus_seg", "none"): 5_000,
            ("cell_instance_seg", "isl"): 10_000,  # every N, both inits
            ("cell_instance_seg", "imagenet"): 10_000,
            ("cell_instance_seg", "none"): 10_000,
        },
        learning_rates={
            ("dapi_isl", "*"): 0.1,
            ("cellmask_isl", "*"): 0.1,
            ("nucleus_seg", "*"): 0.01,
            ("cell_instance_seg", "*"): 0.01,
        },
        large_n_steps=10_000,
    ),
    "cpu": Preset(
        name="cpu",
        roi=256,
        num_samples=5,
        batch_crops=5,
        steps={
            ("dapi_isl", "*"): 2_000,
            ("cellmask_isl", "*"): 2_000,
            ("nucleus_seg", "*"): 400,
            ("cell_instance_seg", "*"): 400,
        },
        learning_rates={
            ("dapi_isl", "*"): 1e-3,
            ("cellmask_isl", "*"): 1e-3,
            ("nucleus_seg", "isl"): 1e-4,  # 1e-3 and the paper's 1e-2 wash the prior out (docs/results/README.md)
            ("nucleus_seg", "*"): 1e-3,
            ("cell_instance_seg", "isl"): 1e-4,  # the ISL network; its new head: head_learning_rate
            ("cell_instance_seg", "*"): 1e-3,
        },
    ),
    "quick": Preset(
        name="quick",
        roi=128,
        num_samples=5,
        batch_crops=5,
        steps={("*", "*"): 40},
        learning_rates={
            ("nucleus_seg", "isl"): 1e-4,
            ("cell_instance_seg", "isl"): 1e-4,
            ("*", "*"): 1e-3,
        },
    ),
}

#: learning rate of the two Conv2d layers the ISL cell network adds (paper: one rate, 0.01, for everything;
#: cpu/quick: 1e-2 with the ISL network at 1e-4, the only setting that reached the distance scale in 100 steps,
#: benchmarks/bench_cell_head.py)
HEAD_LEARNING_RATES = {"paper": 0.01, "cpu": 0.01, "quick": 0.01}


def head_learning_rate(preset: str, device: object = "cpu") -> float:
    """The learning rate of a transfer head (cell_instance_seg from ISL)."""
    return HEAD_LEARNING_RATES[resolve(preset, device).name]


def resolve(preset: str, device: object = "cpu") -> Preset:
    """The :class:`Preset` named ``preset`` (``auto``: ``paper`` on CUDA, else ``cpu``).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    name = str(preset).lower()
    if name == "auto":
        name = "paper" if str(device).startswith("cuda") else "cpu"
    if name not in PRESETS:
        raise ValueError(f"preset {preset!r}: expected one of {['auto', *PRESETS]}")
    return PRESETS[name]


def _lookup(table: dict[tuple[str, str], float], bundle: str, init: str, what: str) -> float:
    for key in ((bundle, init), (bundle, "*"), ("*", init), ("*", "*")):
        if key in table:
            return table[key]
    raise KeyError(f"no {what} for bundle {bundle!r}, init {init!r}")


def learning_rate(preset: str, bundle: str, init: str = "*", device: object = "cpu") -> float:
    """The preset's learning rate for ``bundle`` started from ``init`` (``*`` for the pretext bundles)."""
    return float(_lookup(resolve(preset, device).learning_rates, bundle, str(init).lower(), "learning rate"))


def training_steps(preset: str, bundle: str, init: str = "*", n_images: int = 1, device: object = "cpu") -> int:
    """Optimiser steps for ``bundle`` from ``init`` on ``n_images`` training images (the paper's "samples")."""
    p = resolve(preset, device)
    init = str(init).lower()
    if bundle == "nucleus_seg" and init in ("imagenet", "none") and p.large_n_steps and n_images >= p.large_n:
        return p.large_n_steps
    return int(_lookup(p.steps, bundle, init, "training budget"))


def roi(preset: str, device: object = "cpu") -> list[int]:
    """Training crop size ``[roi, roi]`` of the preset."""
    r = resolve(preset, device).roi
    return [r, r]


def num_samples(preset: str, device: object = "cpu") -> int:
    """Random crops per image and epoch (the paper's 5)."""
    return resolve(preset, device).num_samples


def batch_size(preset: str, n_images: int, device: object = "cpu") -> int:
    """Images per batch: ``batch_crops / num_samples`` (the paper: 2 images x 5 crops = 10), at most ``n_images``."""
    p = resolve(preset, device)
    return max(1, min(int(n_images), p.batch_crops // p.num_samples))


def epochs(steps: int, n_images: int, images_per_batch: int) -> int:
    """Epochs that give ``steps`` optimiser steps: ``ceil(steps / ceil(n_images / images_per_batch))``.

    Raises:
        ValueError: a count is not positive (e.g. an empty training section).
    """
    if int(n_images) < 1 or int(images_per_batch) < 1 or int(steps) < 1:
        raise ValueError(
            f"training steps ({steps}), training images ({n_images}) and images per batch ({images_per_batch}) "
            "must all be >= 1"
        )
    return math.ceil(int(steps) / math.ceil(int(n_images) / int(images_per_batch)))


def validation_interval(max_epochs: int, points: int = 10) -> int:
    """Validate about ``points`` times per run (plus once before training): the learning curve's resolution."""
    return max(1, int(max_epochs) // int(points))
