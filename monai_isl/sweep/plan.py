"""Planning an N-sweep: the task table, training schedules, nested seeded subsets, and the list of runs.

Nothing here trains: :class:`SweepPlan` checks the arguments, reads each datalist once (:func:`read_datalist`),
writes ``sweep.json`` and ``splits/`` and turns every (N, init, seed) into a run description (a JSON-able dict that
:mod:`.worker` executes in its own process).

Schedules (:func:`schedule`) come from :mod:`monai_isl.presets`, in optimiser steps as the paper's Supplementary
Tables 1-2 count them: ``paper`` (the tables: 512x512 crops, batch 10, 20,000 steps for ISL nuclei ...), ``cpu``
(256x256 crops, 400 steps per segmentation run) and ``quick`` (a smoke test); the epochs follow from N. Every
segmentation run also scores the test images at each validation (``curve_section: test``): the learning curve.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import presets
from ..data import find_datalist, load_datalist
from ..networks.transfer import INITS


@dataclass(frozen=True)
class Task:
    """One sweep task: its bundles, its metric, and where the segmentation bundle's evaluation writes the scores.

    ``scores_file`` (in the evaluate ``output_dir``) has one row per test image, the image in ``filename`` and the
    score in ``value_column``; columns starting with ``extra_prefix`` (AP per IoU threshold) go to results.csv too,
    and rows named in ``skip_rows`` (summary rows) are not images.
    """

    pretext: str
    bundle: str
    metric: str
    label: str
    scores_file: str
    value_column: str
    extra_prefix: str | None = None
    skip_rows: tuple[str, ...] = ()


#: sweep task -> bundles, metric and evaluation output (the file names written by the bundles' evaluate configs:
#: MetricsSaver's ``<metric>_raw.csv`` for nuclei, InstanceReport's ``test_ap_table.csv`` for cells)
TASKS: dict[str, Task] = {
    "nucleus": Task("dapi_isl", "nucleus_seg", "test_iou", "IoU", "test_iou_raw.csv", "mean"),
    "cell": Task(
        "cellmask_isl", "cell_instance_seg", "test_map", "mAP", "test_ap_table.csv", "mAP", "AP@", ("mean", "std")
    ),
}
#: the sliding window of validation, test evaluation and example inference, per preset
SW_ROI = {"paper": 512, "cpu": 512, "quick": 256}


@dataclass(frozen=True)
class Schedule:
    """How one bundle run trains: crop size, crops per image per epoch, batch, epochs, validation interval, the
    sliding window used for validation (model selection) and test evaluation alike, and the learning rate(s)."""

    roi: int
    num_samples: int
    batch_size: int
    max_epochs: int
    val_interval: int
    sw_roi: int
    num_workers: int | None = None
    learning_rate: float | None = None
    head_learning_rate: float | None = None
    steps: int | None = None
    preset: str = "cpu"

    def overrides(self) -> dict[str, Any]:
        """The bundle overrides of a training run."""
        optional = {
            "num_workers": self.num_workers,
            "learning_rate": self.learning_rate,
            "head_learning_rate": self.head_learning_rate,
        }
        return {
            **{k: v for k, v in optional.items() if v is not None},
            "roi_size": [self.roi, self.roi],
            "sw_roi_size": self.window(),
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "val_interval": self.val_interval,
        }

    def window(self) -> list[int]:
        """``sw_roi_size`` for validation, evaluation and inference."""
        return [self.sw_roi, self.sw_roi]

    def describe(self) -> str:
        crops = f"{self.num_samples} crops {self.roi}x{self.roi}/image"
        lr = f", lr {self.learning_rate:g}" if self.learning_rate else ""
        steps = f" ({self.steps} steps)" if self.steps else ""
        return f"{self.max_epochs} epochs{steps} x {crops}, batch {self.batch_size}{lr}"


def preset_name(preset: str | None, quick: bool = False) -> str:
    """The preset a sweep uses: ``quick`` when ``--quick``, else ``--preset`` (``auto``: paper on CUDA, cpu else)."""
    if quick:
        return "quick"
    import torch

    return presets.resolve(preset or "auto", "cuda" if torch.cuda.is_available() else "cpu").name


def schedule(
    n_images: int,
    quick: bool = False,
    epochs: int | None = None,
    preset: str | None = None,
    bundle: str = "nucleus_seg",
    init: str = "*",
    steps: int | None = None,
) -> Schedule:
    """Training schedule of ``bundle`` from ``init`` on N images, from the preset (:mod:`monai_isl.presets`).

    The budget is in optimiser steps, as the paper counts it, so N = 1 trains for more epochs than N = 500.
    ``steps`` replaces the preset's budget (still in steps, so every N trains as long); ``epochs`` fixes the number
    of epochs instead (N = 10 then trains 10x longer than N = 1). Validation (and the learning curve) about ten
    times per run.
    """
    if epochs and steps:
        raise ValueError(f"give a fixed number of epochs ({epochs}) or of steps ({steps}), not both")
    name = preset_name(preset, quick)
    batch = presets.batch_size(name, n_images)
    steps = int(steps) if steps else presets.training_steps(name, bundle, init, n_images)
    n_epochs = int(epochs) if epochs else presets.epochs(steps, n_images, batch)
    lr = presets.learning_rate(name, bundle, init)
    head_lr = presets.head_learning_rate(name) if bundle == "cell_instance_seg" else None
    # CPU presets: small cached fields, where DataLoader worker processes cost more than the crops they cut
    workers = 0 if name in ("quick", "cpu") else None
    return Schedule(
        presets.roi(name)[0],
        presets.num_samples(name),
        batch,
        n_epochs,
        presets.validation_interval(n_epochs),
        SW_ROI[name],
        workers,
        lr,
        head_lr,
        None if epochs else steps,
        name,
    )


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


def parse_list(value: str | int | Sequence[Any], what: str, cast: type = int) -> list[Any]:
    """A comma-separated command-line list (or a list) as a list of ``cast``; the error names ``--what``."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        out = [cast(str(v).strip()) for v in items if str(v).strip() != ""]
    except ValueError as e:
        raise ValueError(f"--{what}: expected a comma-separated list, got {value!r}") from e
    if not out:
        raise ValueError(f"--{what}: empty list")
    return out


def run_id(task: str, n: int, init: str, seed: int) -> str:
    """The folder name of a run under ``runs/``."""
    return f"{task}_N{n}_{init}_seed{seed}"


@dataclass(frozen=True)
class Datalist:
    """The sections of one datalist, paths resolved and files checked (an absent or empty section is ``[]``)."""

    path: Path
    training: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    test: list[dict[str, Any]] = field(default_factory=list)

    def names(self, section: str = "training") -> list[str]:
        return [item["name"] for item in getattr(self, section)]


def shown(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies below it (summaries stay valid in a fresh clone)."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def read_datalist(path: str | os.PathLike, required: Sequence[str] = ("training",)) -> Datalist:
    """Read a datalist once: every present section validated by :func:`monai_isl.data.load_datalist`.

    Raises:
        FileNotFoundError: the file or a listed image is missing.
        ValueError: invalid JSON, or a ``required`` section is missing or empty.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        content = {}  # load_datalist below names the error
    present = [s for s in ("training", "validation", "test") if content.get(s) or s in required]
    sections = {s: load_datalist(path, s) for s in present}
    return Datalist(path, **sections)


def _check_imagenet(weights: str | None) -> str:
    """The torchvision DenseNet-121 ImageNet weights file (default: the torch hub cache); never downloaded."""
    from ..networks.densenet import DENSENET121_IMAGENET_FILE

    path = Path(weights) if weights else None
    if path is None:
        hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
        path = hub / DENSENET121_IMAGENET_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"--inits imagenet needs the torchvision DenseNet-121 ImageNet weights at '{path}' "
            "(--imagenet_weights FILE); nothing is downloaded. Use --inits isl,none for a random-init baseline."
        )
    return str(path)


@dataclass(frozen=True)
class SweepOptions:
    """The optional settings of a sweep (see :func:`monai_isl.sweep.sweep`, which documents each one)."""

    quick: bool = False
    preset: str | None = None
    isl_checkpoint: str | None = None
    isl_datalist: str | None = None
    epochs: int | None = None
    isl_epochs: int | None = None
    steps: int | None = None
    isl_steps: int | None = None
    imagenet_weights: str | None = None
    example: int = 0
    extra: dict[str, Any] | None = None


class SweepPlan:
    """The checked arguments, datalists and runs of an N-sweep; ``options``: the fields of :class:`SweepOptions`."""

    def __init__(
        self,
        task: str,
        dataset: str,
        out: str,
        sizes: Sequence[int],
        inits: Sequence[str],
        seeds: Sequence[int],
        **options: Any,
    ) -> None:
        unknown = sorted(set(options) - set(SweepOptions.__dataclass_fields__))
        if unknown:
            raise TypeError(
                f"unknown sweep option(s) {unknown}; expected some of {sorted(SweepOptions.__dataclass_fields__)}"
            )
        o = SweepOptions(**options)
        quick, epochs, isl_epochs, example, extra = o.quick, o.epochs, o.isl_epochs, o.example, o.extra
        isl_checkpoint, imagenet_weights = o.isl_checkpoint, o.imagenet_weights
        if task not in TASKS:
            raise ValueError(f"--task: expected one of {sorted(TASKS)}, got {task!r}")
        for init in inits:
            if init not in INITS:
                raise ValueError(f"--inits: expected some of {list(INITS)}, got {init!r}")
        self.task, self.spec = task, TASKS[task]
        self.dataset, self.out = Path(dataset).resolve(), Path(out).resolve()
        self.sizes, self.inits, self.seeds = sorted(set(sizes)), list(dict.fromkeys(inits)), list(dict.fromkeys(seeds))
        self.quick, self.epochs, self.isl_epochs, self.example = quick, epochs, isl_epochs, int(example)
        self.steps, self.isl_steps = o.steps, o.isl_steps
        for flag, n_epochs, n_steps in (("", epochs, o.steps), ("isl_", isl_epochs, o.isl_steps)):
            for name, value in ((f"--{flag}epochs", n_epochs), (f"--{flag}steps", n_steps)):
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                    raise ValueError(f"{name}: expected a whole number >= 1, got {value!r}")
            if n_epochs and n_steps:
                raise ValueError(f"--{flag}epochs {n_epochs} and --{flag}steps {n_steps}: give one of them")
        self.preset = preset_name(o.preset, quick)
        self.isl_checkpoint = str(Path(isl_checkpoint).resolve()) if isl_checkpoint else None
        if self.isl_checkpoint and not Path(self.isl_checkpoint).is_file():
            raise FileNotFoundError(f"--isl_checkpoint '{self.isl_checkpoint}' does not exist")
        self.imagenet_weights = _check_imagenet(imagenet_weights) if "imagenet" in self.inits else imagenet_weights
        self.extra = dict(extra or {})
        self.train_pretext = "isl" in self.inits and not self.isl_checkpoint
        self.isl_data = self._pretext_datalist(o.isl_datalist)
        self.data = read_datalist(find_datalist(self.dataset, self.spec.bundle), required=("training", "test"))
        if not 0 <= self.example < len(self.data.test):
            raise ValueError(f"--example {example}: expected a test image index in 0..{len(self.data.test) - 1}")
        names = self.data.names()
        if len(set(names)) != len(names):
            raise ValueError(f"datalist '{self.data.path}': training item names are not unique")
        self.subsets = {seed: nested_subsets(names, self.sizes, seed) for seed in self.seeds}

    def _pretext_datalist(self, given: str | None) -> Datalist | None:
        """The pretext datalist: ``--isl_datalist``, else ``<dataset>/<pretext>.json``; needed to train the ISL
        model, and otherwise read (if there) for the fluorescence of the example figure."""
        if given:
            return read_datalist(Path(given).resolve())
        default = self.dataset / f"{self.spec.pretext}.json"
        if self.train_pretext:
            if not default.is_file():
                raise FileNotFoundError(
                    f"--inits isl: no pretext datalist '{default}' (label-free -> fluorescence pairs for "
                    f"{self.spec.pretext}); pass --isl_datalist FILE or --isl_checkpoint MODEL"
                )
            return read_datalist(default)
        if not default.is_file():
            return None
        try:  # only the figure uses it here: an unreadable one costs the fluorescence tile, not the sweep
            return read_datalist(default, required=())
        except (OSError, ValueError):
            return None

    @property
    def datalist(self) -> Path:
        """The segmentation datalist file."""
        return self.data.path

    def write_splits(self) -> None:
        """Save the fixed test set, the validation set and each seed's pool order: the run can be repeated exactly.

        Raises:
            ValueError: ``out`` already holds a sweep with other settings.
        """
        folder = self.out / "splits"
        folder.mkdir(parents=True, exist_ok=True)
        settings = {
            "task": self.task,
            "dataset": str(self.dataset),
            "datalist": str(self.datalist),
            "quick": self.quick,
            "epochs": self.epochs,
            "preset": self.preset,
        }
        if self.steps:  # only when given: sweeps from before --steps stay resumable
            settings["steps"] = self.steps
        if self.extra:  # likewise: a resume with other bundle overrides would mix two experiments
            settings["bundle_args"] = self.extra
        saved = self.out / "sweep.json"
        if saved.is_file():
            previous = json.loads(saved.read_text())
            # sweeps from before presets: --quick was the only choice, the other schedule no longer exists
            previous.setdefault("preset", "quick" if previous.get("quick") else "legacy full")
            # the optional keys count when either side has them (dropping --steps or --bundle_args changes the run)
            keys = [*settings, *(k for k in ("steps", "bundle_args") if k in previous and k not in settings)]
            changed = {k: (previous.get(k), settings.get(k)) for k in keys if previous.get(k) != settings.get(k)}
            if changed:
                raise ValueError(
                    f"'{self.out}' holds a sweep with other settings {changed} (old, new); use another --out"
                )
        saved.write_text(json.dumps(settings, indent=2) + "\n")
        (folder / "test.json").write_text(json.dumps(self.data.test, indent=2) + "\n")
        (folder / "validation.json").write_text(json.dumps(self.data.validation, indent=2) + "\n")
        for seed, subsets in self.subsets.items():
            (folder / f"seed{seed}.json").write_text(json.dumps({str(n): s for n, s in subsets.items()}, indent=2))

    def example_items(self) -> list[dict[str, Any]]:
        """The test image of the example figure, as a one-item datalist section."""
        return self.data.test[self.example : self.example + 1]

    def _run_datalist(self, n: int, seed: int) -> Path:
        by_name = {item["name"]: item for item in self.data.training}
        training = [by_name[name] for name in self.subsets[seed][n]]
        doc = {
            "description": f"{self.task} sweep: N={n}, seed {seed}, from {shown(self.datalist)}",
            "training": training,
            # without a validation set (empty section) the bundle keeps its final model as model.pt
            "validation": self.data.validation,
            "test": self.data.test,
            "example": self.example_items(),
        }
        path = self.out / "splits" / f"N{n}_seed{seed}.json"
        path.write_text(json.dumps(doc, indent=2) + "\n")
        return path

    def _pretext_run(self) -> dict[str, Any]:
        assert self.isl_data is not None
        sched = schedule(
            len(self.isl_data.training),
            self.quick,
            self.isl_epochs,
            self.preset,
            self.spec.pretext,
            steps=self.isl_steps,
        )
        folder = self.out / "pretext"
        folder.mkdir(parents=True, exist_ok=True)
        datalist = folder / "datalist.json"
        has_validation = bool(self.isl_data.validation)
        doc = {
            "training": self.isl_data.training,
            "validation": self.isl_data.validation,
            # the example panel shows the pretext prediction on the segmentation test image
            "example": self.example_items(),
        }
        datalist.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        overrides = {**sched.overrides(), "datalist": str(datalist), "seed": 0}
        return {
            "id": "pretext",
            "bundle": self.spec.pretext,
            "dir": str(folder),
            "train": overrides,
            "select": "best" if has_validation else "final",
            "evaluate": None,
            "example": {"datalist": str(datalist), "sw_roi_size": sched.window()},
            "schedule": asdict(sched),
        }

    def schedule(self, n: int, init: str) -> Schedule:
        """The segmentation schedule at N = ``n`` from ``init``."""
        return schedule(n, self.quick, self.epochs, self.preset, self.spec.bundle, init, steps=self.steps)

    def plan(self) -> list[dict[str, Any]]:
        """Every run: the pretext model first (when needed), then (N, init, seed) in increasing N."""
        runs: list[dict[str, Any]] = [self._pretext_run()] if self.train_pretext else []
        isl_checkpoint = self.isl_checkpoint or str(self.out / "pretext" / "models" / "model.pt")
        for n in self.sizes:
            for init in self.inits:
                sched = self.schedule(n, init)
                for seed in self.seeds:
                    rid = run_id(self.task, n, init, seed)
                    datalist = self._run_datalist(n, seed)
                    overrides = {**sched.overrides(), **self.extra, "datalist": str(datalist), "seed": seed}
                    overrides["init"] = init
                    # the learning curve: test metric at every validation
                    overrides.update(curve_section="test", curve_datalist=str(datalist))
                    if init == "isl":
                        overrides["isl_checkpoint"] = isl_checkpoint
                    if init == "imagenet":
                        overrides["imagenet_weights"] = self.imagenet_weights
                    first = n == self.sizes[0] and seed == self.seeds[0]
                    window = {"datalist": str(datalist), "sw_roi_size": sched.window()}
                    runs.append(
                        {
                            "id": rid,
                            "bundle": self.spec.bundle,
                            "dir": str(self.out / "runs" / rid),
                            "task": self.task,
                            "n_images": n,
                            "init": init,
                            "seed": seed,
                            "train": overrides,
                            # no validation section: the bundle's fine-tune guard validates on held-out rows
                            "select": "best" if self.data.validation else "best on held-out rows",
                            "evaluate": window,
                            "example": dict(window) if first else None,
                            "schedule": asdict(sched),
                        }
                    )
        return runs

    def describe(self, command: str = "") -> str:
        """The settings as markdown bullet points, for summary.md."""
        lines = [f"- command: `{command}`"] if command else []
        validation = len(self.data.validation) or (
            "none (pretext: final model kept; segmentation: the bottom rows of each training image held out)"
        )
        lines += [
            f"- task: {self.task} (`{self.spec.bundle}`, pretext `{self.spec.pretext}`)",
            f"- dataset: `{shown(self.dataset)}` (datalist `{self.datalist.name}`); "
            f"test images: {len(self.data.test)}; "
            f"training pool: {len(self.data.training)}; validation: {validation}",
            f"- schedule: preset `{self.preset}` (monai_isl/presets.py); "
            + "; ".join(
                f"N={n}, {init}: {self.schedule(n, init).describe()}" for n in self.sizes for init in self.inits
            ),
        ]
        if self.extra:
            lines.append(f"- bundle overrides (`--bundle_args`): `{json.dumps(self.extra)}`")
        if "isl" in self.inits:
            trained = f"trained here on `{shown(self.isl_data.path)}`" if self.isl_data else ""
            lines.append(
                f"- ISL pretext model: {f'`{shown(self.isl_checkpoint)}`' if self.isl_checkpoint else trained}"
            )
        return "\n".join(lines)
