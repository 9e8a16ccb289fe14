"""Results of an N-sweep: per-image test scores from the runs' evaluation folders, results.csv and summary.md.

:func:`read_scores` is the one place that reads a bundle's evaluation output; which file and columns it reads
comes from the task table (:data:`monai_isl.sweep.plan.TASKS`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from .plan import INITS, TASKS, Task

#: results.csv columns before the metric (run metadata), in order; cells add ``AP@0.50`` ... after ``value``
RESULT_COLUMNS = (
    "task",
    "n_images",
    "init",
    "seed",
    "roi",
    "num_samples",
    "batch_size",
    "max_epochs",
    "model",
    "train_minutes",
    "image",
    "metric",
    "value",
)


def read_scores(eval_dir: str | Path, task: Task) -> list[dict[str, Any]]:
    """Per-image test scores that the evaluate workflow wrote to ``eval_dir``: ``image``, ``metric``, ``value``
    and, for cells, the AP at each IoU threshold.

    Raises:
        FileNotFoundError: the evaluation file is missing (the run did not finish its evaluation).
    """
    with open(Path(eval_dir) / task.scores_file, newline="") as f:
        table = list(csv.DictReader(f))
    rows = []
    for r in table:
        if r["filename"] in task.skip_rows:
            continue
        extra = {k: float(v) for k, v in r.items() if task.extra_prefix and k.startswith(task.extra_prefix)}
        rows.append({"image": r["filename"], "metric": task.label, "value": float(r[task.value_column]), **extra})
    return rows


def collect_results(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, N, init, seed, test image) of every finished segmentation run: run metadata + scores."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        folder = Path(run["dir"])
        if run["id"] == "pretext" or not (folder / "done.json").is_file():
            continue
        done = json.loads((folder / "done.json").read_text())
        meta = {
            "task": run["task"],
            "n_images": run["n_images"],
            "init": run["init"],
            "seed": run["seed"],
            **{k: run["schedule"][k] for k in ("roi", "num_samples", "batch_size", "max_epochs")},
            "model": run["select"],
            "train_minutes": round(done.get("train_seconds", float("nan")) / 60, 2),
        }
        rows += [{**meta, **score} for score in read_scores(folder / "eval", TASKS[run["task"]])]
    return rows


def write_results_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """results.csv: :data:`RESULT_COLUMNS`, then any further columns (AP per threshold) in first-seen order."""
    fields = list(RESULT_COLUMNS)
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, float]]:
    """(N, init) -> mean and std over all (seed, test image) values, plus the std of the per-seed means."""
    table: dict[tuple[int, str], dict[str, float]] = {}
    for key in sorted({(r["n_images"], r["init"]) for r in rows}):
        group = [r for r in rows if (r["n_images"], r["init"]) == key]
        seeds = sorted({r["seed"] for r in group})
        seed_means = [np.mean([r["value"] for r in group if r["seed"] == s]) for s in seeds]
        values = [r["value"] for r in group]
        table[key] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values)),
            "seed_std": float(np.std(seed_means)),
            "n_values": len(values),
            "n_seeds": len(seeds),
        }
    return table


def inits_in(table: dict[tuple[int, str], Any]) -> list[str]:
    """The inits present in an :func:`aggregate` table, in :data:`INITS` order (ISL first)."""
    return [i for i in INITS if any(k[1] == i for k in table)]


def relative_improvement(isl: float, baseline: float) -> float:
    """ISL over baseline in percent of the baseline, the paper's form ("31.3% at N=1"); nan for a zero baseline."""
    return float("nan") if baseline == 0 else 100.0 * (isl - baseline) / baseline


def convergence_lines(curves: list[dict[str, Any]], metric: str) -> list[str]:
    """Markdown table from the learning curves: per N and init (mean over seeds), the test metric at step 0, at the
    scored step nearest 3/4 of the run and at its last step, and the change of the mean training loss over that last
    quarter. A schedule has converged where both changes are small."""
    from ..handlers.curve import TRAIN_LOSS

    def mean_at(rows: list[dict[str, Any]], step: int) -> float:
        return float(np.mean([r["value"] for r in rows if r["step"] == step]))

    lines = [
        "",
        f"Convergence (learning curves, mean over seeds; test {metric} and training loss at 3/4 and at the end):",
        "",
        f"| N | init | steps | test {metric} at 0 | at 3/4 | at end | loss change over the last quarter |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["n_images"], r["init"]) for r in curves})
    for n, init in keys:
        scores = [r for r in curves if (r["n_images"], r["init"]) == (n, init) and r["metric"] != TRAIN_LOSS]
        losses = [r for r in curves if (r["n_images"], r["init"]) == (n, init) and r["metric"] == TRAIN_LOSS]
        steps = sorted({r["step"] for r in scores})
        if not steps:
            continue
        last = steps[-1]
        quarter = min(steps, key=lambda s: abs(s - 0.75 * last))
        loss_change = "-"
        loss_steps = {r["step"] for r in losses}
        if quarter in loss_steps and last in loss_steps and quarter != last:
            loss_change = f"{100 * (mean_at(losses, last) / mean_at(losses, quarter) - 1):+.0f}%"
        start = f"{mean_at(scores, 0):.3f}" if steps[0] == 0 else "-"
        lines.append(
            f"| {n} | {init} | {last} | {start} | {mean_at(scores, quarter):.3f} | {mean_at(scores, last):.3f} | "
            f"{loss_change} |"
        )
    return lines


def write_summary(
    path: Path,
    rows: list[dict[str, Any]],
    metric: str,
    description: str,
    curves: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """summary.md: mean +- std per N and init, the relative improvement of ISL over each baseline per N, and (with
    ``curves``) how far each schedule had converged."""
    table = aggregate(rows)
    sizes = sorted({n for n, _ in table})
    inits = inits_in(table)
    lines = [f"# N-sweep: test {metric}, ISL pretraining vs baseline", "", description, ""]
    lines.append(f"Mean +- std of the per-image test {metric} over all seeds and test images (seed std: std of the")
    lines.append("per-seed means).")
    lines += ["", "| N | " + " | ".join(inits) + " |", "|---|" + "---|" * len(inits)]
    for n in sizes:
        cells = []
        for init in inits:
            s = table.get((n, init))
            cells.append(
                f"{s['mean']:.3f} +- {s['std']:.3f} (seed std {s['seed_std']:.3f}, {s['n_seeds']} seeds)" if s else "-"
            )
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    improvements: dict[str, dict[int, float]] = {}
    if "isl" in inits:
        lines += ["", "Relative improvement of ISL over the baseline, in percent of the baseline:", ""]
        for base in [i for i in inits if i != "isl"]:
            improvements[base] = {}
            parts = []
            for n in sizes:
                if (n, "isl") in table and (n, base) in table:
                    value = relative_improvement(table[(n, "isl")]["mean"], table[(n, base)]["mean"])
                    improvements[base][n] = value
                    parts.append(f"{value:+.1f}% at N={n}")
            lines.append(f"- ISL vs {base}: " + ", ".join(parts))
    if curves:
        lines += convergence_lines(curves, metric)
    lines += ["", "Per-image values: `results.csv`. Learning curves: `curves.csv`. Figures: `figures/`.", ""]
    path.write_text("\n".join(lines))
    return {"table": {f"N{n}_{i}": v for (n, i), v in table.items()}, "improvement": improvements}


CURVE_COLUMNS = ("run", "n_images", "init", "seed", "step", "crops", "metric", "value")


def collect_curves(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The learning curves of the finished segmentation runs (``logs/learning_curve.csv``, written by
    :class:`monai_isl.handlers.LearningCurve`: the test metric at step 0 and at every validation)."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        path = Path(run["dir"]) / "logs" / "learning_curve.csv"
        if run["id"] == "pretext" or not path.is_file():
            continue
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                rows.append(
                    {
                        "run": run["id"], "n_images": run["n_images"], "init": run["init"], "seed": run["seed"],
                        "step": int(r["step"]), "crops": int(r["crops"]), "metric": r["metric"],
                        "value": float(r["value"]),
                    }
                )  # fmt: skip
    return rows


def write_curves_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``curves.csv``: one row per run and scored step."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CURVE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path
