"""The paper's experiment: train a segmentation bundle on N annotated images, ISL pretraining versus a baseline.

``python -m monai_isl sweep --task nucleus --dataset DIR --sizes 1,10,50 --inits isl,imagenet --seeds 0,1,2 --out DIR``

For every (N, init, seed) the real bundles run through ``monai.bundle`` with overrides, each run in its own process
with its own log: ``train.yaml`` on a seeded, nested subset of N training images, then ``evaluate.yaml`` on the fixed
test set. ``init isl`` starts from the pretext model (``dapi_isl`` for nuclei, ``cellmask_isl`` for cells), trained
once on the whole training pool unless ``--isl_checkpoint`` is given. The sweep is resumable: a finished run is never
retrained, an interrupted one continues from its last checkpoint. Outputs: ``results.csv``, ``summary.md`` and
``figures/`` in the output folder (see :func:`sweep`).

Schedules (:func:`schedule`): the paper's Supplementary Tables 1-2 (training samples per N) were not available to us
offline, so the default follows the authors' public code (5 random 512x512 crops per image per epoch, batch 10, up to
1000 epochs) with a fixed budget of training crops per run, so that small N gets more epochs; ``--quick`` scales this
down to 128x128 crops, a few hundred crops per run and no DataLoader worker processes: minutes on a CPU.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import bundle as bundle_utils
from .data import find_datalist, load_datalist

#: sweep task -> (pretext ISL bundle, segmentation bundle, evaluation metric key, metric name in tables)
TASKS: dict[str, dict[str, str]] = {
    "nucleus": {"pretext": "dapi_isl", "bundle": "nucleus_seg", "metric": "test_iou", "label": "IoU"},
    "cell": {"pretext": "cellmask_isl", "bundle": "cell_instance_seg", "metric": "test_map", "label": "mAP"},
}
INITS = ("isl", "imagenet", "none")
#: training crops per run (crops per image per epoch x N x epochs), full and quick
FULL_CROP_BUDGET, QUICK_CROP_BUDGET = 10_000, 200


@dataclass(frozen=True)
class Schedule:
    """How one bundle run trains: crop size, crops per image per epoch, batch, epochs and validation interval."""

    roi: int
    num_samples: int
    batch_size: int
    max_epochs: int
    val_interval: int
    eval_roi: int
    num_workers: int | None = None

    def overrides(self) -> dict[str, Any]:
        workers = {} if self.num_workers is None else {"num_workers": self.num_workers}
        return {
            **workers,
            "roi_size": [self.roi, self.roi],
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "val_interval": self.val_interval,
        }


def schedule(n_images: int, quick: bool = False, epochs: int | None = None) -> Schedule:
    """Training schedule for N images: a fixed budget of crops per run, so N=1 trains for more epochs than N=500.

    Full: 512x512 crops, 5 per image, batch 10, ``ceil(10000 / 5N)`` epochs within [50, 1000] (the authors' code
    trains 1000 epochs). Quick: 128x128 crops, 5 per image, batch 5, ``ceil(200 / 5N)`` epochs within [1, 40].
    ``epochs`` fixes the number of epochs instead. Validation runs about four times per run.
    """
    if quick:
        roi, batch, budget, lo, hi, eval_roi = 128, 5, QUICK_CROP_BUDGET, 1, 40, 256
    else:
        roi, batch, budget, lo, hi, eval_roi = 512, 10, FULL_CROP_BUDGET, 50, 1000, 512
    num_samples = 5
    n_epochs = int(epochs) if epochs else min(hi, max(lo, math.ceil(budget / (num_samples * n_images))))
    # quick: small cached fields, where starting DataLoader workers every epoch costs more than the crops
    workers = 0 if quick else None
    return Schedule(roi, num_samples, batch, n_epochs, max(1, n_epochs // 4), eval_roi, workers)


def nested_subsets(names: Sequence[str], sizes: Sequence[int], seed: int) -> dict[int, list[str]]:
    """Seeded, nested training subsets: one random order of the pool per seed, subset N = its first N images.

    The 1 image is therefore among the 10, the 10 among the 50, for the same seed.

    Raises:
        ValueError: a size is below 1 or larger than the pool.
    """
    pool = sorted(names)
    for n in sizes:
        if not 1 <= n <= len(pool):
            raise ValueError(f"--sizes: N={n} but the training pool has {len(pool)} images (expected 1..{len(pool)})")
    order = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]
    return {int(n): order[: int(n)] for n in sizes}


def _parse_list(value: str | int | Sequence[Any], what: str, cast: type = int) -> list[Any]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        out = [cast(str(v).strip()) for v in items if str(v).strip() != ""]
    except ValueError as e:
        raise ValueError(f"--{what}: expected a comma-separated list, got {value!r}") from e
    if not out:
        raise ValueError(f"--{what}: empty list")
    return out


def run_id(task: str, n: int, init: str, seed: int) -> str:
    return f"{task}_N{n}_{init}_seed{seed}"


def _bundle_cmd(bundle: str, config: str, overrides: dict[str, Any]) -> list[str]:
    """The ``python -m monai.bundle run`` command line for a config and overrides (as written to commands.txt)."""
    root = Path(bundle_utils.bundle_root(bundle))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(root / "configs" / f"{config}.yaml")]
    cmd += ["--bundle_root", str(root)]
    for key, value in overrides.items():
        cmd += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    return cmd


class SweepError(RuntimeError):
    """A run of the sweep failed; the message names its log."""


class Sweep:
    """Plan, run (resumably) and summarise an N-sweep; see :func:`sweep` for the arguments."""

    def __init__(
        self,
        task: str,
        dataset: str,
        out: str,
        sizes: Sequence[int],
        inits: Sequence[str],
        seeds: Sequence[int],
        quick: bool = False,
        isl_checkpoint: str | None = None,
        isl_datalist: str | None = None,
        epochs: int | None = None,
        isl_epochs: int | None = None,
        imagenet_weights: str | None = None,
        example: int = 0,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"--task: expected one of {sorted(TASKS)}, got {task!r}")
        for init in inits:
            if init not in INITS:
                raise ValueError(f"--inits: expected some of {list(INITS)}, got {init!r}")
        self.task, self.spec = task, TASKS[task]
        self.dataset, self.out = Path(dataset).resolve(), Path(out).resolve()
        self.sizes, self.inits, self.seeds = sorted(set(sizes)), list(dict.fromkeys(inits)), list(dict.fromkeys(seeds))
        self.quick, self.epochs, self.isl_epochs, self.example = quick, epochs, isl_epochs, example
        self.isl_checkpoint = str(Path(isl_checkpoint).resolve()) if isl_checkpoint else None
        self.imagenet_weights = str(Path(imagenet_weights).resolve()) if imagenet_weights else None
        self.extra = dict(extra or {})
        self.datalist = Path(find_datalist(self.dataset, self.spec["bundle"]))
        if isl_datalist:
            self.isl_datalist = Path(isl_datalist).resolve()
        elif "isl" in self.inits and not self.isl_checkpoint:
            self.isl_datalist = self.dataset / f"{self.spec['pretext']}.json"
            if not self.isl_datalist.is_file():
                raise FileNotFoundError(
                    f"--inits isl: no pretext datalist '{self.isl_datalist}' (label-free -> fluorescence pairs for "
                    f"{self.spec['pretext']}); pass --isl_datalist FILE or --isl_checkpoint MODEL"
                )
        else:
            self.isl_datalist = None
        if self.isl_checkpoint and not Path(self.isl_checkpoint).is_file():
            raise FileNotFoundError(f"--isl_checkpoint '{self.isl_checkpoint}' does not exist")
        if "imagenet" in self.inits:
            self._check_imagenet()
        self.pool = load_datalist(self.datalist, "training")
        self.test = load_datalist(self.datalist, "test")
        self.validation = self._optional_section("validation")
        if not 0 <= int(example) < len(self.test):
            raise ValueError(f"--example {example}: expected a test image index in 0..{len(self.test) - 1}")
        names = [item["name"] for item in self.pool]
        if len(set(names)) != len(names):
            raise ValueError(f"datalist '{self.datalist}': training item names are not unique")
        self.subsets = {seed: nested_subsets(names, self.sizes, seed) for seed in self.seeds}
        self.durations: list[float] = []
        self.command = ""

    # ---------------------------------------------------------------- planning
    def _check_imagenet(self) -> None:
        from .networks.densenet import DENSENET121_IMAGENET_FILE

        path = Path(self.imagenet_weights) if self.imagenet_weights else None
        if path is None:
            hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
            path = hub / DENSENET121_IMAGENET_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"--inits imagenet needs the torchvision DenseNet-121 ImageNet weights at '{path}' "
                "(--imagenet_weights FILE); nothing is downloaded. Use --inits isl,none for a random-init baseline."
            )
        self.imagenet_weights = str(path)

    def _optional_section(self, section: str) -> list[dict[str, Any]]:
        content = json.loads(self.datalist.read_text())
        return load_datalist(self.datalist, section) if content.get(section) else []

    def write_splits(self) -> None:
        """Save the fixed test set, the validation set and each seed's pool order: the run can be repeated exactly."""
        folder = self.out / "splits"
        folder.mkdir(parents=True, exist_ok=True)
        settings = {
            "task": self.task,
            "dataset": str(self.dataset),
            "datalist": str(self.datalist),
            "quick": self.quick,
            "epochs": self.epochs,
        }
        saved = self.out / "sweep.json"
        if saved.is_file():
            previous = json.loads(saved.read_text())
            changed = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
            if changed:
                raise ValueError(
                    f"'{self.out}' holds a sweep with other settings {changed} (old, new); use another --out"
                )
        saved.write_text(json.dumps(settings, indent=2) + "\n")
        (folder / "test.json").write_text(json.dumps(self.test, indent=2) + "\n")
        (folder / "validation.json").write_text(json.dumps(self.validation, indent=2) + "\n")
        for seed, subsets in self.subsets.items():
            (folder / f"seed{seed}.json").write_text(json.dumps({str(n): s for n, s in subsets.items()}, indent=2))

    def _run_datalist(self, n: int, seed: int) -> Path:
        by_name = {item["name"]: item for item in self.pool}
        training = [by_name[name] for name in self.subsets[seed][n]]
        doc = {
            "description": f"{self.task} sweep: N={n}, seed {seed}, from {self.datalist}",
            "training": training,
            # without a validation set the run keeps its final model; the section must still be readable
            "validation": self.validation or training[:1],
            "test": self.test,
            "example": self.test[self.example : self.example + 1],
        }
        path = self.out / "splits" / f"N{n}_seed{seed}.json"
        path.write_text(json.dumps(doc, indent=2) + "\n")
        return path

    def plan(self) -> list[dict[str, Any]]:
        """Every run: the pretext model first (when needed), then (N, init, seed) in increasing N."""
        runs: list[dict[str, Any]] = []
        example = {"example": self.test[self.example : self.example + 1]}
        if "isl" in self.inits and not self.isl_checkpoint:
            pool = load_datalist(self.isl_datalist, "training")
            sched = schedule(len(pool), self.quick, self.isl_epochs)
            folder = self.out / "pretext"
            folder.mkdir(parents=True, exist_ok=True)
            datalist = folder / "datalist.json"
            doc = json.loads(Path(self.isl_datalist).read_text())
            resolved = {s: load_datalist(self.isl_datalist, s) for s in ("training", "validation") if doc.get(s)}
            resolved.setdefault("validation", resolved["training"][:1])
            # the example panel shows the pretext prediction on the segmentation test image
            datalist.write_text(json.dumps({**resolved, **example}, indent=2, default=str) + "\n")
            overrides = {**sched.overrides(), "datalist": str(datalist), "seed": 0}
            if not self._has_validation(doc):
                overrides["val_interval"] = sched.max_epochs + 1
            runs.append(
                {
                    "id": "pretext",
                    "bundle": self.spec["pretext"],
                    "dir": str(folder),
                    "train": overrides,
                    "select": "best" if self._has_validation(doc) else "final",
                    "evaluate": None,
                    "example": {"datalist": str(datalist), "roi_size": [sched.eval_roi] * 2},
                    "schedule": asdict(sched),
                }
            )
        isl_checkpoint = self.isl_checkpoint or str(self.out / "pretext" / "models" / "model.pt")
        for n in self.sizes:
            sched = schedule(n, self.quick, self.epochs)
            for init in self.inits:
                for seed in self.seeds:
                    rid = run_id(self.task, n, init, seed)
                    datalist = self._run_datalist(n, seed)
                    overrides = {**sched.overrides(), **self.extra, "datalist": str(datalist), "seed": seed}
                    overrides["init"] = init
                    if init == "isl":
                        overrides["isl_checkpoint"] = isl_checkpoint
                    if init == "imagenet":
                        overrides["imagenet_weights"] = self.imagenet_weights
                    if not self.validation:
                        overrides["val_interval"] = sched.max_epochs + 1
                    first = n == self.sizes[0] and seed == self.seeds[0]
                    runs.append(
                        {
                            "id": rid,
                            "bundle": self.spec["bundle"],
                            "dir": str(self.out / "runs" / rid),
                            "task": self.task,
                            "n_images": n,
                            "init": init,
                            "seed": seed,
                            "train": overrides,
                            "select": "best" if self.validation else "final",
                            "evaluate": {"datalist": str(datalist), "roi_size": [sched.eval_roi] * 2},
                            "example": {"datalist": str(datalist), "roi_size": [sched.eval_roi] * 2} if first else None,
                            "schedule": asdict(sched),
                        }
                    )
        return runs

    @staticmethod
    def _has_validation(doc: dict[str, Any]) -> bool:
        return bool(doc.get("validation"))

    # ---------------------------------------------------------------- running
    def run(self) -> dict[str, Any]:
        """Run every unfinished run in order, then write results.csv, summary.md and the figures."""
        self.write_splits()
        runs = self.plan()
        todo = [r for r in runs if not (Path(r["dir"]) / "done.json").is_file()]
        print(f"sweep {self.task}: {len(runs)} runs ({len(runs) - len(todo)} already finished) -> {self.out}")
        for index, run in enumerate(runs, start=1):
            label = self._label(run)
            if (Path(run["dir"]) / "done.json").is_file():
                print(f"[{index}/{len(runs)}] {label}: finished earlier, skipped")
                continue
            remaining = sum(1 for r in runs[index - 1 :] if not (Path(r["dir"]) / "done.json").is_file())
            eta = f", ETA {np.mean(self.durations) * remaining / 60:.1f} min" if self.durations else ""
            print(f"[{index}/{len(runs)}] {label}: running (log {Path(run['dir']) / 'run.log'}){eta}", flush=True)
            start = time.time()
            self._execute(run)
            self.durations.append(time.time() - start)
            print(f"[{index}/{len(runs)}] {label}: done in {self.durations[-1] / 60:.1f} min", flush=True)
        results = collect_results(self.out, runs)
        write_results_csv(self.out / "results.csv", results)
        summary = write_summary(self.out / "summary.md", results, self.spec["label"], self._describe())
        figures = make_figures(self.out, results, runs, self.spec["label"], self.task)
        print(f"results: {self.out / 'results.csv'}, {self.out / 'summary.md'}, figures: {', '.join(figures)}")
        return summary

    def _label(self, run: dict[str, Any]) -> str:
        if run["id"] == "pretext":
            return f"pretext {run['bundle']} (ISL model for init isl)"
        return f"{self.task} N={run['n_images']} init={run['init']} seed={run['seed']}"

    def _execute(self, run: dict[str, Any]) -> None:
        folder = Path(run["dir"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "run.json").write_text(json.dumps(run, indent=2) + "\n")
        log = folder / "run.log"
        with open(log, "a") as f:
            f.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} start\n")
            f.flush()
            proc = subprocess.run(
                [sys.executable, "-m", "monai_isl.sweep", str(folder / "run.json")],
                stdout=f,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        if proc.returncode != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
            raise SweepError(
                f"run '{run['id']}' failed (exit {proc.returncode}); log: {log}\n{tail}\n"
                "Fix the cause and run the same sweep command again: finished runs are skipped."
            )

    def _describe(self) -> str:
        lines = [f"- command: `{self.command}`"] if self.command else []
        lines += [
            f"- task: {self.task} (`{self.spec['bundle']}`, pretext `{self.spec['pretext']}`)",
            f"- dataset: `{self.dataset}` (datalist `{self.datalist.name}`); test images: {len(self.test)}; "
            f"training pool: {len(self.pool)}; validation: {len(self.validation) or 'none (final model kept)'}",
            f"- schedule: {'quick (CPU)' if self.quick else 'full'}; "
            + "; ".join(f"N={n}: {self._schedule_text(schedule(n, self.quick, self.epochs))}" for n in self.sizes),
        ]
        if "isl" in self.inits:
            source = self.isl_checkpoint or f"trained here on `{self.isl_datalist}`"
            lines.append(f"- ISL pretext model: {source}")
        return "\n".join(lines)

    @staticmethod
    def _schedule_text(s: Schedule) -> str:
        return f"{s.max_epochs} epochs x {s.num_samples} crops {s.roi}x{s.roi}/image, batch {s.batch_size}"


# -------------------------------------------------------------------- worker (one run, own process)
def _worker(run_file: str) -> None:
    """Train, evaluate and (for the example image) infer one run: ``python -m monai_isl.sweep RUN.json``."""
    from .cli import run_bundle

    run = json.loads(Path(run_file).read_text())
    folder = Path(run["dir"])
    models, marker = folder / "models", folder / "trained.json"
    train = {**run["train"], "ckpt_dir": str(models), "output_dir": str(folder / "logs")}
    if not marker.is_file():
        has_ckpt = any(p for pattern in bundle_utils.CHECKPOINT_PATTERNS for p in models.glob(pattern))
        if has_ckpt:
            train["resume"] = True
            print(f"resuming {run['id']} from its last checkpoint in {models}", flush=True)
        _log_command(folder, run["bundle"], "train", train)
        start = time.time()
        run_bundle(run["bundle"], "train", **train)
        marker.write_text(json.dumps({"train_seconds": time.time() - start}) + "\n")
    checkpoint = models / ("model.pt" if run["select"] == "best" else "checkpoint_final.pt")
    if not checkpoint.is_file():
        raise FileNotFoundError(f"run {run['id']}: expected the trained model '{checkpoint}'")
    if run["evaluate"]:
        evaluate = {**run["evaluate"], "checkpoint": str(checkpoint), "output_dir": str(folder / "eval")}
        _log_command(folder, run["bundle"], "evaluate", evaluate)
        run_bundle(run["bundle"], "evaluate", section="test", **evaluate)
    if run["example"]:
        example = {**run["example"], "checkpoint": str(checkpoint), "output_dir": str(folder / "example")}
        _log_command(folder, run["bundle"], "inference", {**example, "section": "example"})
        run_bundle(run["bundle"], "inference", section="example", **example)
    done = {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "checkpoint": str(checkpoint)}
    done.update(json.loads(marker.read_text()))
    (folder / "done.json").write_text(json.dumps(done, indent=2) + "\n")
    # a finished run is never retrained: its per-epoch/iteration training states (~155 MB each) only fill the disk;
    # model.pt and checkpoint_final.pt (the final training state, for fine-tuning further) stay
    for pattern in ("checkpoint_epoch=*.pt", "checkpoint_iteration=*.pt"):
        for intermediate in models.glob(pattern):
            intermediate.unlink()


def _log_command(folder: Path, bundle: str, config: str, overrides: dict[str, Any]) -> None:
    """Append the equivalent ``python -m monai.bundle run`` command to commands.txt, for repeating a run by hand."""
    cmd = _bundle_cmd(bundle, config, overrides)
    with open(folder / "commands.txt", "a") as f:
        f.write(" ".join(f"'{c}'" if any(ch in c for ch in ' [],{}"') else c for c in cmd) + "\n")


# -------------------------------------------------------------------- results
def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def collect_results(out: Path, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, N, init, seed, test image): the metric, AP per threshold for cells, and run metadata."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        if run["id"] == "pretext" or not (Path(run["dir"]) / "done.json").is_file():
            continue
        folder = Path(run["dir"])
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
        if run["task"] == "cell":
            for r in _read_rows(folder / "eval" / "test_ap_table.csv"):
                if r["filename"] in ("mean", "std"):
                    continue
                aps = {k: float(v) for k, v in r.items() if k.startswith("AP@")}
                rows.append({**meta, "image": r["filename"], "metric": "mAP", "value": float(r["mAP"]), **aps})
        else:
            for r in _read_rows(folder / "eval" / "test_iou_raw.csv"):
                rows.append({**meta, "image": r["filename"], "metric": "IoU", "value": float(r["mean"])})
    return rows


def write_results_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    fields: list[str] = []
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
    keys = sorted({(r["n_images"], r["init"]) for r in rows})
    for key in keys:
        values = [r["value"] for r in rows if (r["n_images"], r["init"]) == key]
        seeds = sorted({r["seed"] for r in rows if (r["n_images"], r["init"]) == key})
        seed_means = [
            np.mean([r["value"] for r in rows if (r["n_images"], r["init"], r["seed"]) == (*key, s)]) for s in seeds
        ]
        table[key] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values)),
            "seed_std": float(np.std(seed_means)),
            "n_values": len(values),
            "n_seeds": len(seeds),
        }
    return table


def relative_improvement(isl: float, baseline: float) -> float:
    """ISL over baseline in percent of the baseline, the paper's form ("31.3% at N=1"); nan for a zero baseline."""
    return float("nan") if baseline == 0 else 100.0 * (isl - baseline) / baseline


def write_summary(path: Path, rows: list[dict[str, Any]], metric: str, description: str) -> dict[str, Any]:
    """summary.md: mean +- std per N and init, and the relative improvement of ISL over each baseline per N."""
    table = aggregate(rows)
    sizes = sorted({n for n, _ in table})
    inits = [i for i in INITS if any(k[1] == i for k in table)]
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
    lines += ["", "Per-image values: `results.csv`. Figures: `figures/`.", ""]
    path.write_text("\n".join(lines))
    return {"table": {f"N{n}_{i}": v for (n, i), v in table.items()}, "improvement": improvements}


# -------------------------------------------------------------------- figures
def make_figures(
    out: Path, rows: list[dict[str, Any]], runs: list[dict[str, Any]], metric: str, task: str
) -> list[str]:
    """Box plot at the smallest N, mean metric vs N (log scale, error bars), and an example panel."""
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
    inits = [i for i in INITS if any(k[1] == i for k in table)]
    colors = {"isl": "tab:green", "imagenet": "tab:blue", "none": "tab:gray"}
    n0 = sizes[0]
    fig, ax = plt.subplots(figsize=(4, 4))
    data = [[r["value"] for r in rows if r["n_images"] == n0 and r["init"] == i] for i in inits]
    box = ax.boxplot(data, patch_artist=True)
    ax.set_xticks(range(1, len(inits) + 1), inits)
    for patch, init in zip(box["boxes"], inits):
        patch.set_facecolor(colors[init])
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
            color=colors[init],
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
    panel = example_panel(out, runs, task)
    if panel:
        written.append(str(panel))
    return written


def _first_image(folder: Path) -> np.ndarray | None:
    from .io import read_image

    files = sorted(p for p in folder.glob("*.tif")) if folder.is_dir() else []
    return read_image(files[0]).max(axis=0) if files else None


def example_panel(out: Path, runs: list[dict[str, Any]], task: str) -> Path | None:
    """Label-free input | fluorescence | ISL prediction | ground truth | baseline seg | ISL seg (paper Fig. 8/10)."""
    from .figures import save_panel
    from .io import read_image

    seg_runs = [r for r in runs if r["id"] != "pretext" and r.get("example")]
    if not seg_runs:
        return None
    item = json.loads(Path(seg_runs[0]["example"]["datalist"]).read_text())["example"][0]
    label_free = read_image(item["image"][0])[0]
    truth = read_image(item["label"] if isinstance(item["label"], str) else item["label"][0])[0]
    fluorescence = None
    pretext = next((r for r in runs if r["id"] == "pretext"), None)
    isl_pred = _first_image(Path(pretext["dir"]) / "example") if pretext else None
    fluo_item = _fluorescence_for(out, item)
    if fluo_item is not None:
        fluorescence = np.max([read_image(f)[0] for f in fluo_item], axis=0)
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


def _fluorescence_for(out: Path, item: dict[str, Any]) -> list[str] | None:
    """The pretext (fluorescence) target files of the example test image, if the pretext datalist has it."""
    sweep = json.loads((out / "sweep.json").read_text())
    datalist = Path(sweep["dataset"]) / f"{TASKS[sweep['task']]['pretext']}.json"
    if not datalist.is_file():
        return None
    doc = json.loads(datalist.read_text())
    if not doc.get("test"):
        return None
    for candidate in load_datalist(datalist, "test"):
        if candidate.get("name") == item.get("name"):
            label = candidate["label"]
            return label if isinstance(label, list) else [label]
    return None


def sweep(
    task: str = "nucleus",
    dataset: str = "outputs/synthetic",
    sizes: str | Sequence[int] = "1,10,50",
    inits: str | Sequence[str] = "isl,imagenet",
    seeds: str | Sequence[int] = "0,1,2",
    out: str = "outputs/sweep",
    quick: bool | str = False,
    isl_checkpoint: str | None = None,
    isl_datalist: str | None = None,
    epochs: int | None = None,
    isl_epochs: int | None = None,
    imagenet_weights: str | None = None,
    example: int = 0,
    bundle_args: dict[str, Any] | None = None,
) -> str:
    """The paper's experiment: segmentation trained on N images, ISL pretraining vs a baseline init, per seed.

    Args:
        task: ``nucleus`` (pretext dapi_isl -> nucleus_seg, IoU) or ``cell`` (cellmask_isl -> cell_instance_seg, mAP).
        dataset: folder with the segmentation datalist (``nucleus_seg.json`` / ``cell_instance_seg.json`` or
            ``datalist.json``): ``training`` is the pool the N images are drawn from, ``test`` is the fixed test
            set, ``validation`` (optional) selects the best epoch; without it the final model is evaluated.
        sizes: training-set sizes N, comma-separated (each <= the pool size).
        inits: any of ``isl``, ``imagenet``, ``none`` (random init); ``imagenet`` needs local weights.
        seeds: seeds; each seed draws its own nested subsets and seeds the training.
        out: output folder: ``splits/``, ``pretext/``, ``runs/<run>/`` (models, logs, eval, commands.txt),
            ``results.csv``, ``summary.md``, ``figures/``. Run the same command again to resume.
        quick: CPU-sized schedules (128x128 crops, ~200 crops per run) instead of the full ones.
        isl_checkpoint: a trained pretext ``model.pt``; without it the pretext bundle is trained on the pool.
        isl_datalist: datalist for the pretext training (default: ``<dataset>/<pretext bundle>.json``).
        epochs: fixed number of epochs for every segmentation run (default: the schedule's).
        isl_epochs: fixed number of epochs for the pretext model (default: the schedule's for the pool size).
        imagenet_weights: torchvision ``densenet121-a639ec97.pth`` (default: the torch hub cache).
        example: index of the test image shown in the example panel.
        bundle_args: extra overrides for the segmentation training, e.g. ``'{"learning_rate": 0.01}'``.

    Returns:
        The path of ``summary.md``.
    """
    runner = Sweep(
        task=task,
        dataset=dataset,
        out=out,
        sizes=_parse_list(sizes, "sizes"),
        inits=_parse_list(inits, "inits", str),
        seeds=_parse_list(seeds, "seeds"),
        quick=bundle_utils.as_bool(quick),
        isl_checkpoint=isl_checkpoint,
        isl_datalist=isl_datalist,
        epochs=epochs,
        isl_epochs=isl_epochs,
        imagenet_weights=imagenet_weights,
        example=example,
        extra=bundle_args,
    )
    runner.command = _invocation(locals())
    runner.run()
    return str(runner.out / "summary.md")


def _invocation(arguments: dict[str, Any]) -> str:
    """The command that started this sweep (command line, or the Python call), for summary.md."""
    import shlex

    if sys.argv and Path(sys.argv[0]).parent.name == "monai_isl" and "sweep" in sys.argv[1:2]:
        return "python -m monai_isl " + shlex.join(sys.argv[1:])
    args = ", ".join(f"{k}={v!r}" for k, v in arguments.items() if k != "runner")
    return f"monai_isl.sweep.sweep({args})"


if __name__ == "__main__":
    _worker(sys.argv[1])
