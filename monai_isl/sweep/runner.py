"""Running an N-sweep: the planned runs in order (each in its own process, resumably), then the report."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import bundle as bundle_utils
from .figures import curve_figure, make_figures
from .plan import SweepPlan, parse_list
from .report import collect_curves, collect_results, write_curves_csv, write_results_csv, write_summary
from .worker import execute, is_done


class Sweep(SweepPlan):
    """Plan, run (resumably) and summarise an N-sweep; see :func:`sweep` for the arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.durations: list[float] = []
        self.command = ""

    def run(self, report_only: bool = False) -> dict[str, Any]:
        """Run every unfinished run in order (none with ``report_only``), then write results.csv, summary.md and
        the figures from the finished ones."""
        self.write_splits()
        runs = self.plan()
        todo = [r for r in runs if not is_done(r)]
        print(f"sweep {self.task}: {len(runs)} runs ({len(runs) - len(todo)} already finished) -> {self.out}")
        if report_only:
            return self.report(runs)
        for index, run in enumerate(runs, start=1):
            label = self._label(run)
            if is_done(run):
                print(f"[{index}/{len(runs)}] {label}: finished earlier, skipped")
                continue
            remaining = sum(1 for r in runs[index - 1 :] if not is_done(r))
            eta = f", ETA {np.mean(self.durations) * remaining / 60:.1f} min" if self.durations else ""
            print(f"[{index}/{len(runs)}] {label}: running (log {Path(run['dir']) / 'run.log'}){eta}", flush=True)
            start = time.time()
            execute(run)
            self.durations.append(time.time() - start)
            print(f"[{index}/{len(runs)}] {label}: done in {self.durations[-1] / 60:.1f} min", flush=True)
        return self.report(runs)

    def report(self, runs: list[dict[str, Any]]) -> dict[str, Any]:
        """results.csv, summary.md and figures/ from the finished runs."""
        results = collect_results(runs)
        write_results_csv(self.out / "results.csv", results)
        curves = collect_curves(runs)
        description = self.describe(self.command)
        missing = [r["id"] for r in runs if r["id"] != "pretext" and not is_done(r)]
        if missing:  # an interrupted sweep or --report_only: say which planned runs the tables lack
            description += f"\n- not finished, left out of these tables: {', '.join(missing)}"
            print(f"{len(missing)} unfinished run(s) left out of the tables: {', '.join(missing)}")
        summary = write_summary(self.out / "summary.md", results, self.spec.label, description, curves)
        pretext_test = self.isl_data.test if self.isl_data else None
        figures = make_figures(self.out, results, runs, self.spec.label, self.task, pretext_test)
        if curves:
            write_curves_csv(self.out / "curves.csv", curves)
            figures += curve_figure(self.out, curves, self.spec.label, self.task)
        print(f"results: {self.out / 'results.csv'}, {self.out / 'summary.md'}, figures: {', '.join(figures)}")
        return summary

    def _label(self, run: dict[str, Any]) -> str:
        if run["id"] == "pretext":
            return f"pretext {run['bundle']} (ISL model for init isl)"
        return f"{self.task} N={run['n_images']} init={run['init']} seed={run['seed']}"


def sweep(
    task: str = "nucleus",
    dataset: str = "outputs/synthetic",
    sizes: str | Sequence[int] = "1,10,50",
    inits: str | Sequence[str] = "isl,imagenet",
    seeds: str | Sequence[int] = "0,1,2",
    out: str = "outputs/sweep",
    quick: bool | str = False,
    preset: str = "auto",
    isl_checkpoint: str | None = None,
    isl_datalist: str | None = None,
    epochs: int | None = None,
    isl_epochs: int | None = None,
    steps: int | None = None,
    isl_steps: int | None = None,
    imagenet_weights: str | None = None,
    example: int = 0,
    bundle_args: dict[str, Any] | None = None,
    report_only: bool | str = False,
) -> str:
    """The paper's experiment: segmentation trained on N images, ISL pretraining vs a baseline init, per seed.

    Args:
        task: ``nucleus`` (pretext dapi_isl -> nucleus_seg, IoU) or ``cell`` (cellmask_isl -> cell_instance_seg, mAP).
        dataset: folder with the segmentation datalist, ``nucleus_seg.json`` / ``cell_instance_seg.json`` or
            ``datalist.json``. Its ``training`` section is the pool the N images are drawn from, ``test`` the
            fixed test set, and ``validation`` (optional) selects the best epoch; without it each segmentation
            run holds out the bottom rows of its training images for that (the fine-tune guard), and the pretext
            keeps its final model.
        sizes: training-set sizes N, comma-separated (each <= the pool size).
        inits: any of ``isl``, ``imagenet``, ``none`` (random init); ``imagenet`` needs local weights.
        seeds: seeds; each seed draws its own nested subsets and seeds the training.
        out: output folder: ``splits/``, ``pretext/``, ``runs/<run>/`` (models, logs, eval, commands.txt),
            ``results.csv``, ``summary.md``, ``figures/``. Run the same command again to resume.
        quick: the smoke-test preset (128x128 crops, 40 steps per run): checks the sweep runs, shows nothing.
        preset: the schedules, in optimiser steps as the paper's Supplementary Tables count them (see
            monai_isl/presets.py). ``paper`` is the tables (512x512 crops, batch 10, 20,000 steps for ISL nuclei
            ...), ``cpu`` uses 256x256 crops and 400 steps per segmentation run (~40 min for a cell run at N = 1 on one
            of the 2 cores), ``auto`` is paper on a GPU and cpu otherwise.
        isl_checkpoint: a trained pretext ``model.pt``; without it the pretext bundle is trained on the pool.
        isl_datalist: datalist for the pretext training and the example figure's fluorescence (default:
            ``<dataset>/<pretext bundle>.json``).
        epochs: fixed number of epochs for every segmentation run (default: the schedule's).
        isl_epochs: fixed number of epochs for the pretext model (default: the schedule's for the pool size).
        steps: optimiser steps for every segmentation run instead of the preset's (each N trains as long; with
            ``--epochs``, N = 10 trains 10x longer than N = 1).
        isl_steps: optimiser steps for the pretext model instead of the preset's.
        imagenet_weights: torchvision ``densenet121-a639ec97.pth`` (default: the torch hub cache).
        example: index of the test image shown in the example panel.
        bundle_args: extra overrides for the segmentation training, e.g. ``'{"learning_rate": 0.01}'``.
        report_only: train nothing; write results.csv, summary.md and figures/ from the runs finished so far (the
            summary names the planned runs that are missing), e.g. while other processes still run the rest.

    Returns:
        The path of ``summary.md``.
    """
    runner = Sweep(
        task=task,
        dataset=dataset,
        out=out,
        sizes=parse_list(sizes, "sizes"),
        inits=parse_list(inits, "inits", str),
        seeds=parse_list(seeds, "seeds"),
        quick=bundle_utils.as_bool(quick),
        preset=preset,
        isl_checkpoint=isl_checkpoint,
        isl_datalist=isl_datalist,
        epochs=epochs,
        isl_epochs=isl_epochs,
        steps=steps,
        isl_steps=isl_steps,
        imagenet_weights=imagenet_weights,
        example=example,
        extra=bundle_args,
    )
    runner.command = _invocation(locals())
    runner.run(report_only=bundle_utils.as_bool(report_only))
    return str(runner.out / "summary.md")


def _invocation(arguments: dict[str, Any]) -> str:
    """The command that started this sweep (command line, or the Python call), for summary.md."""
    if sys.argv and Path(sys.argv[0]).parent.name == "monai_isl" and "sweep" in sys.argv[1:2]:
        return "python -m monai_isl " + shlex.join(sys.argv[1:])
    args = ", ".join(f"{k}={v!r}" for k, v in arguments.items() if k != "runner")
    return f"monai_isl.sweep.sweep({args})"
