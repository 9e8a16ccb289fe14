"""The N-sweep (paper's experiment): nested seeded subsets, schedules, the datalists read once, results.csv in the
committed layout, summary numbers, the example figure's fluorescence from --isl_datalist, no import circle, and the
whole sweep end to end on a tiny synthetic dataset, including resuming an interrupted sweep."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monai_isl import bundle as bundle_utils
from monai_isl import sweep as sw
from monai_isl.sweep import plan as sweep_plan

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "docs" / "results"


def test_nested_subsets_are_nested_seeded_and_checked() -> None:
    names = [f"img{i:02d}" for i in range(20)]
    a = sw.nested_subsets(names, [1, 5, 20], seed=0)
    assert [len(a[n]) for n in (1, 5, 20)] == [1, 5, 20]
    assert a[1] == a[5][:1] and a[5] == a[20][:5]  # nested
    assert sorted(a[20]) == sorted(names)
    assert sw.nested_subsets(names, [5], seed=0)[5] == a[5]  # the same seed draws the same subset for any sizes
    b = sw.nested_subsets(names, [5], seed=1)
    assert b[5] != a[5]  # another seed, another subset (20 choose 5 orders: equal only by a 1e-6 chance)
    assert sw.nested_subsets(list(reversed(names)), [5], seed=0)[5] == a[5]  # independent of the datalist order
    with pytest.raises(ValueError, match=r"N=21 but the training pool has 20 images"):
        sw.nested_subsets(names, [1, 21], seed=0)
    with pytest.raises(ValueError, match=r"N=0"):
        sw.nested_subsets(names, [0], seed=0)


def test_schedule_follows_the_presets() -> None:
    """The paper preset gives the Supplementary Tables' epochs (ISL nuclei: 20,000 steps; N = 10: 4,000 epochs)."""
    for n, table_epochs in ((1, 20000), (10, 4000), (50, 800), (100, 400)):
        s = sw.schedule(n, preset="paper", bundle="nucleus_seg", init="isl")
        assert (s.roi, s.num_samples, s.batch_size, s.sw_roi) == (512, 5, min(n, 2), 512)
        assert s.max_epochs == table_epochs and s.learning_rate == 0.01
    assert sw.schedule(50, preset="paper", bundle="nucleus_seg", init="none").max_epochs == 400  # 10,000 steps
    cpu = sw.schedule(1, preset="cpu", bundle="nucleus_seg", init="isl")
    assert (cpu.roi, cpu.max_epochs, cpu.learning_rate) == (256, 400, 1e-4)
    assert sw.schedule(1, preset="cpu", bundle="cell_instance_seg", init="isl").head_learning_rate == 0.01
    q = sw.schedule(1, quick=True)
    assert (q.roi, q.max_epochs, q.num_workers, q.sw_roi) == (128, 40, 0, 256)
    # training crops and the sliding window (the same for validation and for test evaluation) are separate keys
    assert q.overrides()["roi_size"] == [128, 128] and q.overrides()["sw_roi_size"] == [256, 256]
    assert sw.schedule(10, quick=True, epochs=7).max_epochs == 7
    # --steps replaces the budget, still in steps: cpu batches hold 1 image, so N = 10 trains 10 steps per epoch
    assert sw.schedule(10, preset="cpu", steps=200).max_epochs == 20
    assert sw.schedule(1, preset="cpu", steps=200).max_epochs == 200
    with pytest.raises(ValueError, match="not both"):
        sw.schedule(1, preset="cpu", epochs=3, steps=200)
    assert 1 <= q.val_interval <= q.max_epochs


def test_summary_numbers_match_a_direct_computation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for n in (1, 10):
        for init, offset in (("isl", 0.2), ("none", 0.0)):
            for seed in (0, 1, 2):
                for image in ("a", "b"):
                    value = float(np.clip(0.3 + offset + 0.05 * rng.standard_normal(), 0, 1))
                    rows.append({"n_images": n, "init": init, "seed": seed, "image": image, "value": value})
    table = sw.aggregate(rows)
    for n in (1, 10):
        for init in ("isl", "none"):
            values = [r["value"] for r in rows if r["n_images"] == n and r["init"] == init]
            assert table[(n, init)]["mean"] == pytest.approx(sum(values) / len(values))
            assert table[(n, init)]["std"] == pytest.approx(np.std(values))
            per_seed = [
                np.mean([r["value"] for r in rows if (r["n_images"], r["init"], r["seed"]) == (n, init, s)])
                for s in (0, 1, 2)
            ]
            assert table[(n, init)]["seed_std"] == pytest.approx(np.std(per_seed))
    summary = sw.write_summary(tmp_path / "summary.md", rows, "IoU", "- test")
    text = (tmp_path / "summary.md").read_text()
    isl, base = table[(1, "isl")]["mean"], table[(1, "none")]["mean"]
    expected = 100 * (isl - base) / base
    assert summary["improvement"]["none"][1] == pytest.approx(expected)
    assert f"{expected:+.1f}% at N=1" in text
    assert f"| 1 | {isl:.3f} +- {table[(1, 'isl')]['std']:.3f}" in text
    assert sw.relative_improvement(0.42, 0.32) == pytest.approx(31.25)
    assert math.isnan(sw.relative_improvement(0.5, 0.0))


def test_bad_sweep_arguments_are_named(synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = dict(task="nucleus", dataset=str(synth_dir), out=str(tmp_path / "o"), inits=["isl", "none"], seeds=[0])
    with pytest.raises(ValueError, match="training pool has 3 images"):
        sw.Sweep(sizes=[1, 4], **kwargs)
    with pytest.raises(ValueError, match=r"--example 5: expected a test image index in 0\.\.0"):
        sw.Sweep(sizes=[1], example=5, **kwargs)
    with pytest.raises(ValueError, match="--task"):
        sw.Sweep(sizes=[1], **{**kwargs, "task": "mitochondria"})
    with pytest.raises(ValueError, match="--inits"):
        sw.Sweep(sizes=[1], **{**kwargs, "inits": ["isl", "random"]})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    with pytest.raises(FileNotFoundError, match="densenet121-a639ec97.pth.*nothing is downloaded"):
        sw.Sweep(sizes=[1], **{**kwargs, "inits": ["isl", "imagenet"]})
    no_pretext = tmp_path / "seg_only"
    shutil.copytree(synth_dir, no_pretext)
    (no_pretext / "dapi_isl.json").unlink()
    with pytest.raises(FileNotFoundError, match="dapi_isl.json.*--isl_datalist"):
        sw.Sweep(sizes=[1], **{**kwargs, "dataset": str(no_pretext)})
    with pytest.raises(ValueError, match="--epochs 3 and --steps 200: give one of them"):
        sw.Sweep(sizes=[1], epochs=3, steps=200, **kwargs)
    with pytest.raises(ValueError, match=r"--isl_steps: expected a whole number >= 1, got 0"):
        sw.Sweep(sizes=[1], isl_steps=0, **kwargs)
    with pytest.raises(ValueError, match="--sizes"):
        sw.sweep(dataset=str(synth_dir), sizes="1,x", out=str(tmp_path / "p"))


def test_importing_the_sweep_does_not_import_the_cli() -> None:
    """No import circle: the sweep runs bundles through monai_isl.bundle, never through the command line module."""
    code = "import sys, monai_isl.sweep; sys.exit(int('monai_isl.cli' in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr or "importing monai_isl.sweep imported monai_isl.cli"


def test_each_datalist_is_read_once(synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = sweep_plan.load_datalist

    def counting(path: Any, section: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        calls.append((Path(path).name, section))
        return real(path, section, *args, **kwargs)

    monkeypatch.setattr(sweep_plan, "load_datalist", counting)
    runner = sw.Sweep("nucleus", str(synth_dir), str(tmp_path / "o"), [1, 2], ["isl", "none"], [0, 1], quick=True)
    runner.write_splits()
    runs = runner.plan()
    runner.describe()
    # the segmentation and the pretext datalist: each present section validated exactly once, nothing re-read later
    assert sorted(calls) == sorted(set(calls))
    sections = ("training", "validation", "test")
    assert set(calls) == {(f, s) for f in ("nucleus_seg.json", "dapi_isl.json") for s in sections}
    assert isinstance(runner.data, sw.Datalist) and len(runs) == 1 + 2 * 2 * 2
    pretext = json.loads((tmp_path / "o" / "pretext" / "datalist.json").read_text())
    assert [i["name"] for i in pretext["training"]] == runner.isl_data.names()


def test_bundle_args_are_part_of_the_sweep_settings(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--bundle_args are saved in sweep.json and shown in summary.md: a resume with other overrides is refused (it
    would mix two experiments in one table); paths below the working directory are shown relative to it."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    args = ("nucleus", "data", "o", [1], ["none"], [0])
    runner = sw.Sweep(*args, quick=True, extra={"learning_rate": 0.01})
    runner.write_splits()
    assert json.loads((tmp_path / "o" / "sweep.json").read_text())["bundle_args"] == {"learning_rate": 0.01}
    text = runner.describe()
    assert '`{"learning_rate": 0.01}`' in text and "- dataset: `data`" in text and str(tmp_path) not in text
    with pytest.raises(ValueError, match="other settings.*bundle_args"):
        sw.Sweep(*args, quick=True, extra={"learning_rate": 0.001}).write_splits()
    with pytest.raises(ValueError, match="other settings.*bundle_args"):
        sw.Sweep(*args, quick=True).write_splits()


def test_runs_go_through_the_bundle_workflows(synth_dir: Path, tmp_path: Path) -> None:
    """Each planned run trains with the schedule's crops and evaluates/infers with its one sliding window; the
    commands.txt line of a workflow lists exactly the config files monai_isl.bundle.workflow_configs gives."""
    out = tmp_path / "o"
    runner = sw.Sweep("nucleus", str(synth_dir), str(out), [1], ["none"], [0], quick=True)
    # a folder of an earlier sweep: its sweep.json (these five keys) is accepted, its runs keep their folders
    legacy = {"task": "nucleus", "dataset": str(synth_dir), "datalist": str(synth_dir / "nucleus_seg.json")}
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({**legacy, "quick": True, "epochs": None}))
    runner.write_splits()
    (run,) = runner.plan()
    assert run["dir"] == str(out / "runs" / "nucleus_N1_none_seed0") and (out / "splits" / "N1_seed0.json").is_file()
    window = sw.schedule(1, quick=True).window()
    assert run["train"]["roi_size"] == [128, 128] and run["train"]["sw_roi_size"] == window
    assert run["evaluate"]["sw_roi_size"] == window == run["example"]["sw_roi_size"]
    assert "roi_size" not in run["evaluate"] and "roi_size" not in run["example"]
    root = bundle_utils.bundle_root("nucleus_seg")
    for workflow in ("train", "evaluate", "inference"):
        cmd = sw.bundle_command("nucleus_seg", workflow, {"seed": 0})
        configs = cmd[cmd.index("--config_file") + 1]
        expected = bundle_utils.workflow_configs(root, workflow)
        assert all(c in configs for c in expected) and configs.count(".yaml") == len(expected)


def _fake_finished(run: dict[str, Any], task: str, names: list[str]) -> None:
    """A finished run as the worker leaves it, its evaluation file written by the same code the bundle uses."""
    folder = Path(run["dir"])
    (folder / "eval").mkdir(parents=True, exist_ok=True)
    (folder / "done.json").write_text(json.dumps({"train_seconds": 60.0}))
    if task == "nucleus":
        from monai.handlers.utils import write_metrics_reports

        values = np.linspace(0.2, 0.8, len(names))
        write_metrics_reports(folder / "eval", names, None, {"test_iou": values}, None)
    else:
        from monai_isl.handlers.report import InstanceReport
        from monai_isl.metrics.instance import match_instances

        labels = np.zeros((16, 16), dtype=np.int32)
        labels[2:8, 2:8], labels[9:14, 9:14] = 1, 2
        report = InstanceReport(folder / "eval")
        report.rows = [(name, match_instances(labels, labels * (i % 2))) for i, name in enumerate(names)]
        report.write()


def test_report_only_trains_nothing_and_names_the_missing_runs(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--report_only summarises the finished runs of a partly run sweep; the summary says which runs it lacks."""
    from monai_isl.sweep import runner as sweep_runner

    out = tmp_path / "o"
    planner = sw.Sweep("nucleus", str(synth_dir), str(out), [1, 2], ["none"], [0, 1], quick=True)
    planner.write_splits()
    runs = planner.plan()
    finished, unfinished = runs[:2], runs[2:]
    for run in finished:
        _fake_finished(run, "nucleus", [i["name"] for i in planner.data.test])

    def refuse(run: dict[str, Any]) -> None:
        raise AssertionError(f"report_only executed {run['id']}")

    monkeypatch.setattr(sweep_runner, "execute", refuse)
    sw.sweep(
        task="nucleus",
        dataset=str(synth_dir),
        sizes="1,2",
        inits="none",
        seeds="0,1",
        out=str(out),
        quick=True,
        report_only="true",
    )
    summary = (out / "summary.md").read_text()
    missing = summary.split("not finished, left out of these tables: ")[1].splitlines()[0]
    assert sorted(missing.split(", ")) == sorted(r["id"] for r in unfinished)
    rows = _csv(out / "results.csv")
    assert {(int(r["n_images"]), int(r["seed"])) for r in rows} == {(r["n_images"], r["seed"]) for r in finished}
    assert not any((Path(r["dir"]) / "done.json").exists() for r in unfinished)


@pytest.mark.parametrize("task, committed", [("nucleus", "synthetic_nucleus"), ("cell", "synthetic_cell")])
def test_results_csv_keeps_the_committed_columns(task: str, committed: str, synth_dir: Path, tmp_path: Path) -> None:
    runner = sw.Sweep(task, str(synth_dir), str(tmp_path / "o"), [1, 2], ["isl", "none"], [0], quick=True)
    runner.write_splits()
    runs = runner.plan()
    names = ["img_a", "img_b"]
    for run in runs[1:]:
        _fake_finished(run, task, names)
    rows = sw.collect_results(runs)
    assert len(rows) == 4 * len(names) and {r["metric"] for r in rows} == {sw.TASKS[task].label}
    path = sw.write_results_csv(tmp_path / "results.csv", rows)
    with open(COMMITTED / committed / "results.csv", newline="") as f:
        expected_header = next(csv.reader(f))
    with open(path, newline="") as f:
        assert next(csv.reader(f)) == expected_header
    first = _csv(path)[0]
    assert (first["task"], first["n_images"], first["roi"], first["train_minutes"]) == (task, "1", "128", "1.0")


def test_example_figure_uses_the_isl_datalist(synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--isl_datalist is the pretext datalist everywhere: the pretext training and the figure's fluorescence tile."""
    from monai_isl.io import write_image

    default = json.loads((synth_dir / "dapi_isl.json").read_text())
    stain = write_image(tmp_path / "other_stain.tif", np.full((1, 96, 96), 7.0, dtype=np.float32))

    def restained(section: str) -> list[dict[str, Any]]:
        return [{**i, "image": [str(synth_dir / f) for f in i["image"]], "label": str(stain)} for i in default[section]]

    other = tmp_path / "other_isl.json"
    other.write_text(json.dumps({"training": restained("training"), "test": restained("test")}))

    runner = sw.Sweep(
        "nucleus", str(synth_dir), str(tmp_path / "o"), [1], ["isl", "none"], [0], quick=True, isl_datalist=str(other)
    )
    runner.write_splits()
    runs = runner.plan()
    pretext = json.loads((tmp_path / "o" / "pretext" / "datalist.json").read_text())
    assert {i["label"] for i in pretext["training"]} == {str(stain)}
    assert runs[0]["select"] == "final"  # the other datalist has no validation section
    for run in runs[1:]:
        _fake_finished(run, "nucleus", [i["name"] for i in runner.data.test])
    shown: dict[str, Any] = {}

    def capture(images: list[Any], titles: list[str], path: Path, **kwargs: Any) -> Path:
        shown.update(zip(titles, images))
        return Path(path)

    monkeypatch.setattr("monai_isl.figures.save_panel", capture)
    runner.report(runs)
    assert shown["fluorescence"] is not None and np.all(shown["fluorescence"] == 7.0)
    assert "other_isl.json" in (tmp_path / "o" / "summary.md").read_text()


def test_without_validation_the_final_model_is_model_pt(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dataset without a validation section: the run datalists (segmentation and pretext) get an empty one, not a
    training field (with one, the step-0 validation made the untrained network model.pt, and an interval beyond the
    run kept it), the schedule's validation interval stays (checkpoints and learning-curve points), and the worker
    evaluates model.pt (the segmentation bundle selects it on the rows it holds out of its training image)."""
    from monai_isl.sweep import worker

    data = tmp_path / "data"
    data.mkdir()
    for name in ("cell_instance_seg", "cellmask_isl"):
        doc = json.loads((synth_dir / f"{name}.json").read_text())
        absolute = {
            s: [
                {**i, "image": [str(synth_dir / f) for f in i["image"]], "label": str(synth_dir / i["label"])}
                for i in doc[s]
            ]
            for s in ("training", "test")
        }
        (data / f"{name}.json").write_text(json.dumps(absolute))
    runner = sw.Sweep("cell", str(data), str(tmp_path / "o"), [1], ["isl", "none"], [0], quick=True)
    runner.write_splits()
    runs = runner.plan()
    # the pretext keeps its final model; the segmentation runs select on the fine-tune guard's held-out rows
    assert [r["select"] for r in runs] == ["final"] + ["best on held-out rows"] * 2
    pretext = json.loads((tmp_path / "o" / "pretext" / "datalist.json").read_text())
    assert pretext["validation"] == [] and len(pretext["training"]) > 0
    for run in runs:
        assert run["train"]["val_interval"] == run["schedule"]["val_interval"] <= run["schedule"]["max_epochs"]
    for run in runs[1:]:
        doc = json.loads(Path(run["train"]["datalist"]).read_text())
        assert doc["validation"] == [] and len(doc["training"]) == 1

    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(worker, "_run", lambda folder, bundle, workflow, overrides: calls.append((workflow, overrides)))
    run = runs[1]
    models = Path(run["dir"]) / "models"
    models.mkdir(parents=True)
    for name in ("model.pt", "checkpoint_final.pt"):
        (models / name).write_bytes(b"")
    (Path(run["dir"]) / "trained.json").write_text(json.dumps({"train_seconds": 1.0}))
    run_file = Path(run["dir"]) / "run.json"
    run_file.write_text(json.dumps(run))
    worker.main(run_file)
    assert [w for w, _ in calls] == ["evaluate", "inference"]
    assert {o["checkpoint"] for _, o in calls} == {str(models / "model.pt")}


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_sweep_end_to_end_and_resume(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = dict(task="nucleus", dataset=str(synth_dir), sizes="1,2", inits="isl,none", seeds="0", out=str(out))
    args.update(quick=True, epochs=1, isl_epochs=1)
    summary = Path(sw.sweep(**args))

    # the pretext model was trained, then every (N, init) run trained and evaluated with the real bundles
    runs = {p.name: p for p in (out / "runs").iterdir()}
    assert sorted(runs) == sorted(f"nucleus_N{n}_{i}_seed0" for n in (1, 2) for i in ("isl", "none"))
    assert (out / "pretext" / "models" / "model.pt").is_file()
    for folder in [out / "pretext", *runs.values()]:  # finished runs keep their models, not every training state
        kept = sorted(p.name for p in (folder / "models").glob("*.pt"))
        assert "checkpoint_final.pt" in kept and not [k for k in kept if k.startswith("checkpoint_epoch")], kept
    commands = (runs["nucleus_N1_isl_seed0"] / "commands.txt").read_text()
    assert "-m monai.bundle run" in commands and "nucleus_seg/configs/train.yaml" in commands
    assert "--init isl" in commands and str(out / "pretext" / "models" / "model.pt") in commands
    evaluate_line = next(line for line in commands.splitlines() if "evaluate.yaml" in line)
    root = bundle_utils.bundle_root("nucleus_seg")
    assert all(c in evaluate_line for c in bundle_utils.workflow_configs(root, "evaluate"))

    # splits: fixed test set, nested seeded subsets, and each run's datalist trains on exactly its subset
    test_names = [item["name"] for item in json.loads((out / "splits" / "test.json").read_text())]
    subsets = json.loads((out / "splits" / "seed0.json").read_text())
    assert subsets["1"] == subsets["2"][:1]
    assert subsets == {
        str(n): s for n, s in sw.nested_subsets(["field_000", "field_001", "field_002"], [1, 2], 0).items()
    }
    for n in (1, 2):
        doc = json.loads((out / "splits" / f"N{n}_seed0.json").read_text())
        assert [item["name"] for item in doc["training"]] == subsets[str(n)]
        assert [item["name"] for item in doc["test"]] == test_names

    # results.csv: one row per (N, init, seed, test image), values equal to the bundle's own evaluation CSV
    rows = _csv(out / "results.csv")
    assert len(rows) == 4 * len(test_names)
    for row in rows:
        raw = _csv(runs[f"nucleus_N{row['n_images']}_{row['init']}_seed0"] / "eval" / "test_iou_raw.csv")
        assert float(row["value"]) == pytest.approx(
            float(next(r["mean"] for r in raw if r["filename"] == row["image"]))
        )
        assert row["metric"] == "IoU" and 0.0 <= float(row["value"]) <= 1.0
    text = summary.read_text()
    assert "| 1 |" in text and "| 2 |" in text and "ISL vs none:" in text and "at N=1" in text
    # learning curves: every run scored on the test set before training (step 0) and at its last step; the last
    # score of a run whose final model is evaluated equals its evaluation (same model, same images)
    curves = _csv(out / "curves.csv")
    for rid in runs:
        steps = [int(r["step"]) for r in curves if r["run"] == rid and r["metric"] != "train_loss"]
        assert steps[0] == 0 and len(steps) >= 2 and steps == sorted(steps), (rid, steps)
        # the mean training loss at every scored step after the start: what the convergence table reads
        losses = {int(r["step"]): float(r["value"]) for r in curves if r["run"] == rid and r["metric"] == "train_loss"}
        assert sorted(losses) == steps[1:] and all(0 < v < float("inf") for v in losses.values()), (rid, losses)
    assert "Convergence" in text and "| 1 | isl |" in text and "| 2 | none |" in text
    for name in ("nucleus_box_N1.png", "nucleus_vs_N.png", "nucleus_example.png", "nucleus_learning_curves.png"):
        png = out / "figures" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # resume: a run interrupted during training continues from its checkpoint; finished runs are not touched
    interrupted = runs["nucleus_N2_none_seed0"]
    for marker in ("done.json", "trained.json"):
        (interrupted / marker).unlink()
    shutil.rmtree(interrupted / "eval")
    finished = {name: (p / "done.json").stat().st_mtime_ns for name, p in runs.items() if p != interrupted}
    pretext_done = (out / "pretext" / "done.json").stat().st_mtime_ns
    sw.sweep(**args)
    assert {name: (runs[name] / "done.json").stat().st_mtime_ns for name in finished} == finished
    assert (out / "pretext" / "done.json").stat().st_mtime_ns == pretext_done
    lines = (interrupted / "commands.txt").read_text().splitlines()
    train_lines = [line for line in lines if "train.yaml" in line and "evaluate.yaml" not in line]
    assert len(train_lines) == 2 and "--resume true" in train_lines[-1]
    assert (interrupted / "eval" / "test_iou_raw.csv").is_file() and len(_csv(out / "results.csv")) == len(rows)

    # a sweep with other settings refuses to mix into this folder
    with pytest.raises(ValueError, match="other settings"):
        sw.sweep(**{**args, "epochs": 3})
