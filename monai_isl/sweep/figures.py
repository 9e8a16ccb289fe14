"""Figures of an N-sweep: a box plot at the smallest N, the metric against N, and an example test image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .report import aggregate, inits_in

COLORS = {"isl": "tab:green", "imagenet": "tab:blue", "none": "tab:gray"}


def make_figures(
    out: Path,
    rows: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    metric: str,
    task: str,
    pretext_test: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Box plot at the smallest N, mean metric vs N (log scale, error bars), and the example panel.

    ``pretext_test``: the test section of the pretext datalist (``--isl_datalist``), for the fluorescence tile.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    if not rows:
        return written
    table = aggregate(rows)
    sizes = sorted({n for n, _ in table})
    inits = inits_in(table)
    n0 = sizes[0]
    fig, ax = plt.subplots(figsize=(4, 4))
    data = [[r["value"] for r in rows if r["n_images"] == n0 and r["init"] == i] for i in inits]
    box = ax.boxplot(data, patch_artist=True)
    ax.set_xticks(range(1, len(inits) + 1), inits)
    for patch, init in zip(box["boxes"], inits):
        patch.set_facecolor(COLORS[init])
        patch.set_alpha(0.6)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"{task}: N={n0} training image{'s' if n0 > 1 else ''}")
    fig.tight_layout()
    fig.savefig(folder / f"{task}_box_N{n0}.png", dpi=100)
    plt.close(fig)
    written.append(str(folder / f"{task}_box_N{n0}.png"))

    fig, ax = plt.subplots(figsize=(5, 4))
    for init in inits:
        ns = [n for n in sizes if (n, init) in table]
        ax.errorbar(
            ns,
            [table[(n, init)]["mean"] for n in ns],
            yerr=[table[(n, init)]["std"] for n in ns],
            marker="o",
            capsize=3,
            label=init,
            color=COLORS[init],
        )
    ax.set_xscale("log")
    ax.set_xlabel("training images N")
    ax.set_ylabel(f"test {metric} (mean +- std)")
    ax.set_title(f"{task}: {metric} vs N")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / f"{task}_vs_N.png", dpi=100)
    plt.close(fig)
    written.append(str(folder / f"{task}_vs_N.png"))
    panel = example_panel(out, runs, task, pretext_test)
    if panel:
        written.append(str(panel))
    return written


def _first_image(folder: Path) -> np.ndarray | None:
    from ..io import read_image

    files = sorted(folder.glob("*.tif")) if folder.is_dir() else []
    return read_image(files[0]).max(axis=0) if files else None


def fluorescence_files(pretext_test: list[dict[str, Any]] | None, name: str | None) -> list[str] | None:
    """The fluorescence (pretext target) files of test image ``name`` in the pretext test section, if it has it."""
    for candidate in pretext_test or []:
        if candidate.get("name") == name:
            label = candidate["label"]
            return label if isinstance(label, list) else [label]
    return None


def example_panel(
    out: Path, runs: list[dict[str, Any]], task: str, pretext_test: list[dict[str, Any]] | None = None
) -> Path | None:
    """Label-free input | fluorescence | ISL prediction | ground truth | baseline seg | ISL seg (paper Fig. 8/10)."""
    from ..figures import save_panel
    from ..io import read_image

    seg_runs = [r for r in runs if r["id"] != "pretext" and r.get("example")]
    if not seg_runs:
        return None
    item = json.loads(Path(seg_runs[0]["example"]["datalist"]).read_text())["example"][0]
    label_free = read_image(item["image"][0])[0]
    truth = read_image(item["label"] if isinstance(item["label"], str) else item["label"][0])[0]
    pretext = next((r for r in runs if r["id"] == "pretext"), None)
    isl_pred = _first_image(Path(pretext["dir"]) / "example") if pretext else None
    fluo = fluorescence_files(pretext_test, item.get("name"))
    fluorescence = np.max([read_image(f)[0] for f in fluo], axis=0) if fluo else None
    by_init = {r["init"]: _first_image(Path(r["dir"]) / "example") for r in seg_runs}
    baseline = next((i for i in ("imagenet", "none") if i in by_init), None)
    images = [label_free, fluorescence, isl_pred, truth, by_init.get(baseline), by_init.get("isl")]
    titles = [
        "label-free input",
        "fluorescence",
        "ISL prediction",
        "ground truth",
        f"baseline ({baseline}) segmentation",
        "ISL segmentation",
    ]
    n = seg_runs[0]["n_images"]
    return save_panel(
        images,
        titles,
        out / "figures" / f"{task}_example.png",
        suptitle=f"{task}, test image {item.get('name')}, models trained on N={n}",
        cmaps=["gray", "magma", "magma", "nipy_spectral", *(["nipy_spectral"] * 2 if task == "cell" else ["gray"] * 2)],
    )


def curve_figure(out: Path, curves: list[dict[str, Any]], metric: str, task: str) -> list[str]:
    """The test metric (top row) and the mean training loss (bottom row, where recorded) against training steps,
    one column per N, mean +- std over seeds per init.

    The head start of an ISL initialisation is visible here even where the end points of both inits meet, and both
    rows flattening before the last step shows that the schedule has converged.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..handlers.curve import TRAIN_LOSS

    if not curves:
        return []
    sizes = sorted({r["n_images"] for r in curves})
    panels = [(False, f"test {metric}")] + (
        [(True, "training loss")] if any(r["metric"] == TRAIN_LOSS for r in curves) else []
    )
    fig, axes = plt.subplots(len(panels), len(sizes), figsize=(4 * len(sizes), 3.4 * len(panels)), squeeze=False)
    for row, (is_loss, label) in enumerate(panels):
        for ax, n in zip(axes[row], sizes):
            for init in [i for i in COLORS if any(r["init"] == i and r["n_images"] == n for r in curves)]:
                rows = [
                    r for r in curves
                    if r["init"] == init and r["n_images"] == n and (r["metric"] == TRAIN_LOSS) == is_loss
                ]  # fmt: skip
                steps = sorted({r["step"] for r in rows})
                if not steps:
                    continue
                values = [[r["value"] for r in rows if r["step"] == s] for s in steps]
                mean, std = np.array([np.mean(v) for v in values]), np.array([np.std(v) for v in values])
                ax.plot(steps, mean, "o-", color=COLORS[init], label=init, ms=3)
                ax.fill_between(steps, mean - std, mean + std, color=COLORS[init], alpha=0.2)
            if is_loss:
                ax.set_yscale("log")
            ax.set_xlabel("training steps")
            ax.set_ylabel(label)
            ax.set_title(f"{task}: N={n}")
            ax.legend()
    fig.tight_layout()
    path = out / "figures" / f"{task}_learning_curves.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [str(path)]
