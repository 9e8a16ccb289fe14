"""The benchmark scripts still run and measure what they claim, on tiny inputs (their numbers are in benchmarks/)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_throughput_training_items_hold_whole_batches_only(tmp_path: Path) -> None:
    """5 training fields in batches of 2 would end each pass with a half batch; the list repeats them instead."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        (data / f"f{i}.tif").write_bytes(b"x")
    content = {"training": [{"image": [f"f{i}.tif"], "label": f"f{i}.tif"} for i in range(5)]}
    (data / "nucleus_seg.json").write_text(json.dumps(content))
    bench = _load("bench_throughput")
    items = bench.whole_batches(data, "nucleus_seg", batch_size=2, iterations=3)
    assert [Path(item["label"]).name for item in items] == ["f0.tif", "f1.tif", "f2.tif", "f3.tif", "f4.tif", "f0.tif"]
    assert all(Path(item["image"][0]).is_absolute() and Path(item["image"][0]).is_file() for item in items)


@pytest.mark.slow
def test_inference_benchmark_runs_both_settings_and_reports_the_split(tmp_path: Path, capsys) -> None:
    bench = _load("bench_inference")
    code = bench.main(["--size", "256", "--fields", "2", "--image", "", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"baseline", "default"} <= set(rows)
    assert "(1 field)" in rows["default"]  # field 1 is the warm-up; the median is over the others
    assert "speed-up default vs baseline" in out and "mAP between the label images" in out
    assert len(list((tmp_path / "cell_instance_seg" / "predictions").glob("*_cells.tif"))) == 2
