"""configs/multi_gpu_train.yaml: DistributedDataParallel training with torchrun, run here as 2 CPU processes (gloo).

Checks what makes multi-process training correct: both ranks end with identical weights, they trained on
different shares of the data, and only rank 0 writes checkpoints and TensorBoard curves, the same files as a
single-process train.yaml run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import BUNDLES, REPO, TINY_ONE_EPOCH, as_cli
from monai.bundle import run

TINY = as_cli(TINY_ONE_EPOCH)
# added by this test only: every rank saves its final weights and its share of the data before leaving
DUMP_CONFIG = """
finalize:
  - "$torch.save({'state': {k: v.detach().cpu() for k, v in @network_def.state_dict().items()},
      'train': list(@train#sampler), 'validate': list(@validate#sampler)},
      os.path.join(os.environ['DUMP_DIR'], f'rank{torch.distributed.get_rank()}.pt'))"
  - $monai_isl.runtime.end_distributed()
"""


def _yaml(name: str, config: str) -> dict:
    return yaml.safe_load((REPO / "bundles" / name / "configs" / f"{config}.yaml").read_text())


@pytest.mark.parametrize("name", BUNDLES)
def test_multi_gpu_config_keeps_train_steps(name: str) -> None:
    """The overlay keeps train.yaml's initialize and run lists (a step added there is run here too) and replaces
    only the documented steps, by name: the seed (process group first, a seed per rank) and the checkpointer (rank 0
    only)."""
    single, multi = _yaml(name, "train"), _yaml(name, "multi_gpu_train")
    assert "initialize" not in multi and "run" not in multi
    replaced = {k for k in multi if k.startswith(("init_steps#", "run_steps#"))}
    assert replaced == {"init_steps#seed", "run_steps#checkpointer"}
    for key in replaced:
        group, step = key.split("#")
        assert step in single[group]
    # the process group starts before any step that does work (only the checks of the settings come first)
    assert single["initialize"][:3] == ["@init_steps#command_line", "@init_steps#settings", "@init_steps#seed"]
    assert "@run_steps#checkpointer" in single["run"]
    assert "rank() == 0" in multi["run_steps#checkpointer"] and "init_distributed" in multi["init_steps#seed"]


def _bundle(name: str, dest: Path) -> Path:
    shutil.copytree(REPO / "bundles" / name / "configs", dest / name / "configs")
    return dest / name


def _rank_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _scalar_tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in run_dir.glob("events.out.tfevents*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


@pytest.mark.slow  # 60-100 s on 2 cores: torchrun, two processes importing MONAI, then a single-process run
def test_torchrun_two_cpu_processes(synth_dir: Path, tmp_path: Path) -> None:
    name = "nucleus_seg"  # the ISL transfer path: dapi_isl weights loaded on every rank
    root = _bundle(name, tmp_path)
    from monai_isl.networks import PaddedFlexibleUNet

    torch.manual_seed(0)
    isl = tmp_path / "dapi.pt"
    torch.save(PaddedFlexibleUNet(in_channels=3, out_channels=1, backbone="densenet121").state_dict(), isl)
    dump = tmp_path / "dump"
    dump.mkdir()
    (tmp_path / "dump.yaml").write_text(DUMP_CONFIG)
    configs = [str(root / "configs" / "train.yaml"), str(root / "configs" / "multi_gpu_train.yaml")]
    overrides = {
        **TINY,
        "dataset_dir": str(synth_dir),
        "bundle_root": str(root),
        "isl_checkpoint": str(isl),
        "sw_roi_size": "[64,64]",
        "min_free_mb": "0",
        # one folder per rank, to see which rank writes what
        "ckpt_dir": f"$'{tmp_path}/models_rank' + os.environ['RANK']",
        "output_dir": f"$'{tmp_path}/runs_rank' + os.environ['RANK']",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "monai.bundle", "run", "--config_file", str([*configs, str(tmp_path / "dump.yaml")])]
    command += [arg for key, value in overrides.items() for arg in (f"--{key}", value)]
    env = {**os.environ, "DUMP_DIR": str(dump), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    ranks = [torch.load(dump / f"rank{r}.pt", map_location="cpu") for r in (0, 1)]
    # DistributedDataParallel kept the processes in step: bit-identical weights (BatchNorm statistics included)
    assert set(ranks[0]["state"]) == set(ranks[1]["state"])
    different = [k for k in ranks[0]["state"] if not torch.equal(ranks[0]["state"][k], ranks[1]["state"][k])]
    assert not different, different[:5]
    # ... while each trained on its own share of the 3 training fields (DistributedSampler pads to 2 + 2)
    train0, train1 = ranks[0]["train"], ranks[1]["train"]
    assert len(train0) == len(train1) == 2 and set(train0) | set(train1) == {0, 1, 2} and train0 != train1
    assert ranks[0]["validate"] == ranks[1]["validate"] == [0]  # 1 validation field, padded for 2 processes
    # rank 0 saved the run's final state, and is the only rank that wrote anything
    final = torch.load(tmp_path / "models_rank0" / "checkpoint_final.pt", map_location="cpu", weights_only=False)
    assert all(torch.equal(final["model"][k], v) for k, v in ranks[0]["state"].items())
    assert final["trainer"]["iteration"] == final["trainer"]["epoch_length"] == 2  # 1 epoch of 2 steps per rank
    assert _rank_files(tmp_path / "models_rank1") == []
    assert "train_loss" in _scalar_tags(tmp_path / "runs_rank0")
    # MONAI builds every TensorBoard handler's writer (an empty events file) on every rank; none attached on rank 1
    assert _scalar_tags(tmp_path / "runs_rank1") == set()
    ddp_files = _rank_files(tmp_path / "models_rank0")

    # train.yaml alone (one process) still works and writes the same set of files
    single = {k: v for k, v in overrides.items() if k not in ("ckpt_dir", "output_dir")}
    single.update(ckpt_dir=str(tmp_path / "single" / "models"), output_dir=str(tmp_path / "single" / "runs"))
    single.update({k: yaml.safe_load(v) for k, v in TINY.items()}, min_free_mb=0, sw_roi_size=[64, 64])
    run(config_file=configs[0], **single)
    assert _rank_files(tmp_path / "single" / "models") == ddp_files
    assert {"model.pt", "checkpoint_final.pt"} <= set(ddp_files)
