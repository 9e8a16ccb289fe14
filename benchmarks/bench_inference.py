"""Benchmark: cell_instance_seg inference on whole 2160 x 2160 fields, end to end, through the bundle config.

Runs ``bundles/cell_instance_seg/configs/inference.yaml`` with ``monai.bundle.ConfigWorkflow`` (what
``python -m monai.bundle run`` does) on fields written to a temporary dataset: read, percentile normalisation,
sliding-window FlexibleUNet-densenet121 on 512 x 512 windows, h-maxima watershed, TIFF write. Two settings run in
the same process, alternately:

* baseline: the inference config as it was (window overlap 0.25 -> 36 windows, ``sw_batch_size`` 4, NCHW, one
  window's convolutions spread over all cores);
* default: the config as it is now (``sw_overlap`` 0.1875 -> 25 windows, ``channels_last``, on a CPU one window
  per core in parallel threads: ``sw_threads`` = torch's thread count, 32 windows cut out per pass);
* ``--sequential`` adds the default with one window at a time on all cores (``sw_threads`` 1); ``--variant
  KEY=VALUE`` adds the default with other config overrides (e.g. ``sw_overlap=0.25``).

The field is a real phase-contrast image (by default the held-out Usiigaci field ``set26`` from ``../shared/data``,
1022 x 1024) mirrored out to 2160 x 2160, or a synthetic DIC field (``--image ''`` or no data folder); field ``i > 1``
is the same scene rolled by a random shift, with fresh noise. ``--checkpoint`` takes a trained cell_instance_seg
``model.pt``; without it the network has random weights: the network time is the same, but a random network's
flat output makes the post-processing time (which depends on the number and shape of the basins) meaningless.

Printed per setting: end-to-end time per field, split into waiting for the field (read + normalise run in the
DataLoader worker), network (the sliding-window inferer) and post-processing + writing; the CPU time of the main
process; the ratio. The outputs of the two settings are compared on field 1: max abs difference of the network
output, mAP between the two label images, and, for a Usiigaci field, each setting's mAP against its hand-drawn
labels. ``--explore`` times the network alone per 512 x 512 window for the candidate speed-ups (channels_last,
window batch size, ``torch.inference_mode``, TorchScript freeze + optimize_for_inference, bf16 autocast).

Run: ``python benchmarks/bench_inference.py [--fields 3] [--rounds 1] [--checkpoint model.pt] [--explore]``
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monai_isl.bundle import workflow_configs  # noqa: E402
from monai_isl.metrics import mean_average_precision  # noqa: E402

TARGET_S = 15.0
BASELINE = {  # the config before: MONAI's plain SlidingWindowInferer, 4 windows per network call, NCHW weights
    "sw_overlap": 0.25,
    "sw_batch_size": 4,
    "channels_last": False,
    "inferer": {
        "_target_": "SlidingWindowInferer",
        "roi_size": "@sw_roi_size",
        "sw_batch_size": "@sw_batch_size",
        "overlap": "@sw_overlap",
        "mode": "gaussian",
    },
}
SEQUENTIAL = {"sw_threads": 1}  # the default, but one window at a time on all cores


REAL_IMAGE = ROOT.parent / "shared" / "data" / "usiigaci" / "set26" / "phase.tif"  # a held-out Usiigaci field


def _scene(workdir: Path, size: int, image: str | None) -> np.ndarray:
    """A ``(1, size, size)`` uint16 field: a real image mirrored out to ``size``, or a synthetic DIC field."""
    if image:
        from monai_isl.io import read_image

        plane = read_image(image)[:1]
        h, w = plane.shape[1:]
        padded = np.pad(plane, ((0, 0), (0, max(size - h, 0)), (0, max(size - w, 0))), mode="symmetric")
        return padded[:, :size, :size].astype(np.uint16)
    from monai_isl.synthetic import generate_field

    scene_file = workdir / f"scene_{size}.npy"
    if not scene_file.is_file():
        print(f"generating a synthetic {size} x {size} field (once; ~20-30 s at 2160) ...", flush=True)
        np.save(scene_file, generate_field(np.random.default_rng(0), size=size)["dic"][None])
    return np.load(scene_file)


def write_dataset(workdir: Path, size: int, n_fields: int, image: str | None) -> Path:
    """``n_fields`` copies of one scene (rolled by a random shift, with fresh noise) and their datalist."""
    import json

    import tifffile

    data = workdir / "data"
    scene = _scene(workdir, size, image)
    rng = np.random.default_rng(1)
    items = []
    for i in range(n_fields):
        folder = data / f"field_{i}"
        folder.mkdir(parents=True, exist_ok=True)
        shift = (int(rng.integers(0, size)), int(rng.integers(0, size))) if i else (0, 0)
        field = np.roll(scene[0], shift, axis=(0, 1)).astype(np.int32) + rng.integers(-20, 21, scene.shape[1:])
        tifffile.imwrite(folder / "image.tif", np.clip(field, 0, 65535).astype(np.uint16))
        items.append({"image": [f"field_{i}/image.tif"]})
    doc = {"training": items[:1], "validation": items[:1], "test": items}
    (data / "cell_instance_seg.json").write_text(json.dumps(doc))
    return data


def make_bundle(workdir: Path, checkpoint: str | None) -> Path:
    """A copy of the cell_instance_seg bundle with ``models/model.pt``: ``checkpoint``, or random weights."""
    from monai_isl.networks import cell_network

    root = workdir / "cell_instance_seg"
    if not root.exists():
        ignore = shutil.ignore_patterns("models", "runs", "eval", "predictions", "cache")
        shutil.copytree(ROOT / "bundles" / "cell_instance_seg", root, ignore=ignore)
    (root / "models").mkdir(exist_ok=True)
    model = root / "models" / "model.pt"
    if checkpoint:
        shutil.copy(checkpoint, model)
    else:
        torch.manual_seed(0)
        torch.save(cell_network(in_channels=1, init="isl", load_pretrained=False).state_dict(), model)
    return root


def run_setting(bundle_root: Path, dataset_dir: Path, overrides: dict[str, Any], keep_first: bool) -> dict[str, Any]:
    """Run the inference workflow once over all test fields; per-field times and (optionally) the first outputs."""
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow
    from monai.engines.utils import IterationEvents

    start = time.perf_counter()
    workflow = ConfigWorkflow(
        config_file=workflow_configs(bundle_root, "inference"),
        workflow_type="infer",
        logging_file=False,
        bundle_root=str(bundle_root),
        dataset_dir=str(dataset_dir),
        output_dir=str(bundle_root / "predictions"),
        # an untrained model stores no fitted h: the paper's fixed one (the timing does not depend on it)
        **({"h": 10.0} if bundle_root.name == "cell_instance_seg" else {}),
        **overrides,
    )
    workflow.initialize()
    evaluator = workflow.parser.get_parsed_content("evaluator")
    marks: dict[str, tuple[float, float]] = {}  # event -> (wall clock, CPU time of this process)
    fields: list[dict[str, float]] = []
    kept: dict[str, np.ndarray] = {}

    def mark(name: str):
        return lambda engine: marks.__setitem__(name, (time.perf_counter(), time.process_time()))

    evaluator.add_event_handler(Events.GET_BATCH_STARTED, mark("load_start"))
    evaluator.add_event_handler(Events.GET_BATCH_COMPLETED, mark("load_end"))
    evaluator.add_event_handler(Events.ITERATION_STARTED, mark("net_start"))
    evaluator.add_event_handler(IterationEvents.FORWARD_COMPLETED, mark("net_end"))

    def iteration_done(engine: Any) -> None:
        end = (time.perf_counter(), time.process_time())
        fields.append(
            {
                "load": marks["load_end"][0] - marks["load_start"][0],
                "network": marks["net_end"][0] - marks["net_start"][0],
                "post": end[0] - marks["net_end"][0],
                "total": end[0] - marks["load_start"][0],
                "cpu_network": marks["net_end"][1] - marks["net_start"][1],
                "cpu_total": end[1] - marks["load_start"][1],
            }
        )
        if keep_first and not kept:
            out = engine.state.output[0]
            kept["pred"] = out["pred"].detach().cpu().numpy().copy()
            kept["labels"] = np.asarray(out["pred_instances"]).reshape(out["pred"].shape[-2:]).copy()

    evaluator.add_event_handler(Events.ITERATION_COMPLETED, iteration_done)
    workflow.run()
    workflow.finalize()
    return {"fields": fields, "run": time.perf_counter() - start, "kept": kept}


def _summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over the fields after the first of each run (the first also loads numba's compiled kernel)."""
    warm = [f for r in runs for f in (r["fields"][1:] or r["fields"])]
    keys = ("load", "network", "post", "total", "cpu_network", "cpu_total")
    out = {k: statistics.median(f[k] for f in warm) for k in keys}
    out["first"] = statistics.median(r["fields"][0]["total"] for r in runs)
    out["low"], out["high"], out["n"] = min(f["total"] for f in warm), max(f["total"] for f in warm), len(warm)
    return out


def explore(repeat: int, threads: int) -> None:
    """Time the cell network per 512 x 512 window for the candidate speed-ups (same weights, same input)."""
    import warnings

    from monai_isl.networks import cell_network

    torch.manual_seed(0)
    base = cell_network(in_channels=1, init="isl", load_pretrained=False).eval()
    x = torch.rand(5, 1, 512, 512)
    cl = copy.deepcopy(base).to(memory_format=torch.channels_last)
    variants: dict[str, tuple[torch.nn.Module, str]] = {
        "NCHW, no_grad": (base, "no_grad"),
        "NCHW, inference_mode": (base, "inference_mode"),
        "channels_last, no_grad": (cl, "no_grad"),
        "channels_last, inference_mode": (cl, "inference_mode"),
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            scripted = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(copy.deepcopy(base))))
            variants["TorchScript freeze + optimize_for_inference"] = (scripted, "no_grad")
        except Exception as err:  # TorchScript is deprecated; report instead of failing
            print(f"TorchScript: failed ({type(err).__name__}: {str(err)[:200]})")
    variants["channels_last, bf16 autocast"] = (cl, "bf16")
    with torch.no_grad():
        ref = base(x[:1])
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    diffs: dict[str, float] = {}
    for rep in range(repeat + 1):
        for name, (net, mode) in variants.items():
            for bs in (1, 5) if mode != "bf16" else (1,):
                if mode == "bf16" and rep > 1:
                    continue  # measured once: it is far slower on a CPU without bf16 units
                ctx = torch.inference_mode() if mode == "inference_mode" else torch.no_grad()
                with ctx:
                    auto = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16")
                    with auto:
                        t, c = time.perf_counter(), time.process_time()
                        out = net(x[:bs])
                        dt, dc = (time.perf_counter() - t) / bs, (time.process_time() - c) / bs
                if rep == 0:
                    diffs[name] = float((out[:1].float() - ref).abs().max())
                    continue
                results.setdefault((name, bs), []).append((dt, dc))
    print(f"\nnetwork alone per 512 x 512 window ({torch.get_num_threads()} threads, min of {repeat}):")
    print("| variant | windows per batch | s / window | CPU s / window | max abs diff vs NCHW |")
    print("|---|---|---|---|---|")
    for (name, bs), ts in results.items():
        wall, cpu = min(t[0] for t in ts), min(t[1] for t in ts)
        print(f"| {name} | {bs} | {wall:.3f} | {cpu:.3f} | {diffs[name]:.2e} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2160)
    parser.add_argument("--fields", type=int, default=2, help="fields per run; the first is a warm-up")
    parser.add_argument("--rounds", type=int, default=1, help="baseline/default runs, alternating")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a new temporary folder)")
    parser.add_argument(
        "--image",
        default="auto",
        help="a real single-channel image mirrored to --size (auto: a Usiigaci field from ../shared/data if present; "
        "'' for a synthetic DIC field)",
    )
    parser.add_argument("--checkpoint", default=None, help="a trained cell_instance_seg model.pt (default: random)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--explore", action="store_true", help="also time the candidate speed-ups per window")
    parser.add_argument("--explore-repeat", type=int, default=3)
    parser.add_argument("--explore-only", action="store_true", help="only the per-window timings")
    parser.add_argument("--no-baseline", action="store_true", help="only the current config")
    parser.add_argument(
        "--sequential", action="store_true", help="also the default with one window at a time (no window threads)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="also the default with these config overrides, e.g. sw_overlap=0.25 (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import os

    os.environ.setdefault("MONAI_ISL_DEVICE", "cpu")  # the CPU target; a GPU would otherwise be picked
    if args.explore or args.explore_only:
        explore(args.explore_repeat, args.threads)
        if args.explore_only:
            return 0

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_inference_"))
    workdir.mkdir(parents=True, exist_ok=True)
    image = args.image if args.image != "auto" else (str(REAL_IMAGE) if REAL_IMAGE.is_file() else None)
    dataset_dir = write_dataset(workdir, args.size, args.fields, image or None)
    bundle_root = make_bundle(workdir, args.checkpoint)
    print(f"field: {image + ' mirrored to the field size' if image else 'synthetic DIC'}; network: ", end="")
    print(args.checkpoint or "random weights (the post-processing time is not representative)")
    # in this order in every round: baseline, the extra settings, the default last
    settings: dict[str, dict[str, Any]] = {} if args.no_baseline else {"baseline": dict(BASELINE)}
    if args.sequential:
        settings["sequential"] = dict(SEQUENTIAL)
    for variant in args.variant:
        pairs = (item.split("=", 1) for item in variant.split(","))
        settings[variant] = {key: yaml.safe_load(value) for key, value in pairs}  # "0" -> 0, "false" -> False
    settings["default"] = {}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in settings}
    for rnd in range(args.rounds):
        for name, overrides in settings.items():
            print(f"round {rnd + 1}: {name} {overrides} (the rest: config defaults) ...", flush=True)
            runs[name].append(run_setting(bundle_root, dataset_dir, overrides, keep_first=rnd == 0))

    print(
        f"\n{args.size} x {args.size} field, cell_instance_seg inference, {torch.get_num_threads()} torch threads; "
        + (
            f"median over fields 2..{args.fields} of {args.rounds} round(s) (field 1 = warm-up)"
            if args.fields > 1
            else "one field"
        )
    )
    print(
        "| setting | end to end / field | range | wait for the field (read + normalise) | network "
        "| post-process + write | first field | CPU time / field (network) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    summary = {}
    for name, rs in runs.items():
        s = summary[name] = _summary(rs)
        print(
            f"| {name} | {s['total']:.2f} s | {s['low']:.2f}-{s['high']:.2f} s ({s['n']} field{'s' * (s['n'] > 1)}) "
            f"| {s['load']:.2f} s "
            f"| {s['network']:.2f} s | {s['post']:.2f} s | {s['first']:.2f} s "
            f"| {s['cpu_total']:.1f} s ({s['cpu_network']:.1f} s) |"
        )
    missed = summary["default"]["total"] > TARGET_S
    if "baseline" in summary:
        ratio = summary["baseline"]["total"] / summary["default"]["total"]
        print(f"\nspeed-up default vs baseline: {ratio:.2f}x (end to end per field)")
        a, b = runs["baseline"][0]["kept"], runs["default"][0]["kept"]
        dist = np.abs(a["pred"][0] - b["pred"][0]).max()
        prob = np.abs(1 / (1 + np.exp(-a["pred"][1])) - 1 / (1 + np.exp(-b["pred"][1]))).max()
        m = mean_average_precision(a["labels"], b["labels"])
        print(
            f"outputs, default vs baseline (field 1): max |distance diff| {dist:.3g} (output range "
            f"{a['pred'][0].min():.3g}..{a['pred'][0].max():.3g}), max |mask probability diff| {prob:.3g}, "
            f"mAP between the label images {m:.4f} ({int(a['labels'].max())} vs {int(b['labels'].max())} instances)"
        )
        truth = Path(image).with_name("cells.png") if image else None
        if truth is not None and truth.is_file():  # field 1 holds the real image unshifted in its top-left corner
            from monai_isl.io import read_image

            gt = read_image(truth)[0]
            h, w = gt.shape
            scores = {k: mean_average_precision(gt, r["labels"][:h, :w]) for k, r in (("baseline", a), ("default", b))}
            print(f"mAP against the hand-drawn labels of {truth} (its {h} x {w} region of field 1): {scores}")
    print(f"\ntarget: <= {TARGET_S:.0f} s end to end per field: default {summary['default']['total']:.2f} s")
    if missed:
        print("TARGET MISSED")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
