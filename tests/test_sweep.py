"""The N-sweep (paper's experiment): nested seeded subsets, schedules, summary numbers, and the whole sweep end to end
on a tiny synthetic dataset, including resuming an interrupted sweep."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from monai_isl import sweep as sw


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


def test_schedule_keeps_a_crop_budget() -> None:
    for n in (1, 10, 50, 100, 500):
        s = sw.schedule(n)
        assert (s.roi, s.num_samples, s.batch_size) == (512, 5, 10)
        assert s.max_epochs == min(1000, max(50, math.ceil(sw.FULL_CROP_BUDGET / (5 * n))))
    assert sw.schedule(1).max_epochs == 1000 and sw.schedule(10).max_epochs == 200 and sw.schedule(500).max_epochs == 50
    q = sw.schedule(1, quick=True)
    assert (q.roi, q.max_epochs, q.num_workers) == (128, 40, 0)
    assert sw.schedule(50, quick=True).max_epochs == 1 and sw.schedule(10, quick=True).max_epochs == 4
    assert sw.schedule(10, quick=True, epochs=7).max_epochs == 7
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
    with pytest.raises(ValueError, match="--sizes"):
        sw.sweep(dataset=str(synth_dir), sizes="1,x", out=str(tmp_path / "p"))


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
    for name in ("nucleus_box_N1.png", "nucleus_vs_N.png", "nucleus_example.png"):
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
    train_lines = [line for line in (interrupted / "commands.txt").read_text().splitlines() if "train.yaml" in line]
    assert len(train_lines) == 2 and "--resume true" in train_lines[-1]
    assert (interrupted / "eval" / "test_iou_raw.csv").is_file() and len(_csv(out / "results.csv")) == len(rows)

    # a sweep with other settings refuses to mix into this folder
    with pytest.raises(ValueError, match="other settings"):
        sw.sweep(**{**args, "epochs": 3})
