"""A real training process killed with SIGKILL (between saves, and in the middle of writing a checkpoint) resumes
from its last checkpoint with optimiser, epoch and iteration restored, and no checkpoint file is ever left corrupt.

These start ``python -m monai.bundle run`` on cellmask_isl's real network (tiny synthetic data, 64x64 crops), so
they take a minute or two on a CPU: marked ``slow`` (``.ci/run`` runs them; ``-m "not slow"`` skips them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, TINY_ONE_CROP, as_cli

from monai_isl.bundle import workflow_configs

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore", "MONAI_ISL_DEVICE": "cpu"}
TINY = as_cli(TINY_ONE_CROP)
EPOCH_LENGTH = 3  # the synthetic dataset's 3 training fields, batch size 1
ITER_LINE = re.compile(r"Epoch: (\d+)/\d+, Iter: (\d+)/(\d+) -- train_loss")
TIMEOUT_S = 600


def _bundle_copy(tmp_path: Path) -> Path:
    """cellmask_isl's configs in a temporary bundle folder, so models/ and runs/ land there."""
    root = tmp_path / "cellmask_isl"
    shutil.copytree(REPO / "bundles" / "cellmask_isl" / "configs", root / "configs")
    return root


def _command(root: Path, synth_dir: Path, **overrides: str) -> list[str]:
    configs = str(workflow_configs(root, "train"))  # the list form, as for every workflow
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs]
    for key, value in {"bundle_root": str(root), "dataset_dir": str(synth_dir), **TINY, **overrides}.items():
        cmd += [f"--{key}", value]
    return cmd


def _run_to_completion(command: list[str], cwd: Path) -> str:
    """Run a bundle command to its end; assert it succeeded and return its output (stdout + stderr)."""
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=TIMEOUT_S)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    return log


def _iterations(log: str) -> list[int]:
    """Global iteration numbers of the per-iteration loss lines of a training log."""
    return [(int(e) - 1) * int(n) + int(i) for e, i, n in ITER_LINE.findall(log)]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _newest_interval_checkpoint(models: Path) -> tuple[int, Path] | None:
    found = [(int(p.stem.split("=")[1]), p) for p in models.glob("checkpoint_iteration=*.pt")]
    return max(found) if found else None


def _every_pt_loads(models: Path) -> dict[str, dict]:
    return {p.name: _load(p) for p in sorted(models.glob("*.pt"))}


def test_sigkill_mid_epoch_then_resume(synth_dir: Path, tmp_path: Path) -> None:
    root = _bundle_copy(tmp_path)
    models = root / "models"
    log_path = tmp_path / "killed.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            _command(root, synth_dir, max_epochs="30", save_every_n_iterations="2"),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=ENV,
            cwd=tmp_path,
        )
        try:
            # wait until a checkpoint is on disk and training went on past it, then kill without warning
            deadline = time.monotonic() + TIMEOUT_S
            while True:
                assert proc.poll() is None, f"training ended before it could be killed:\n{log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no checkpoint in {TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}"
                newest = _newest_interval_checkpoint(models)
                done = _iterations(log_path.read_text())
                if newest is not None and done and max(done) > newest[0]:
                    break
                time.sleep(0.1)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    last_logged = max(_iterations(log_path.read_text()))

    # whatever the kill interrupted, every checkpoint file is complete; at most one interval (2 iterations) is lost
    files = _every_pt_loads(models)
    k, cut_path = _newest_interval_checkpoint(models)
    cut = files[cut_path.name]
    assert cut["trainer"]["iteration"] == k >= last_logged - 2
    assert cut["optimizer"]["state"][0]["step"] == k
    assert not (models / "checkpoint_final.pt").exists()

    # resume: finish the interrupted epoch and one more
    max_epochs = k // EPOCH_LENGTH + 2
    total = max_epochs * EPOCH_LENGTH
    log = _run_to_completion(
        _command(root, synth_dir, max_epochs=str(max_epochs), save_every_n_iterations="2", resume="true"), tmp_path
    )
    assert f"resumed from '{cut_path}': epoch {k // EPOCH_LENGTH}, iteration {k}" in log
    assert _iterations(log) == list(range(k + 1, total + 1))  # exactly the missing iterations, none repeated
    final = _load(models / "checkpoint_final.pt")
    assert final["trainer"]["iteration"] == total
    # Adam counts its steps: restored from the checkpoint, then one per remaining iteration
    assert final["optimizer"]["state"][0]["step"] == total
    assert any(not torch.equal(final["model"][n], cut["model"][n]) for n in cut["model"])
    assert list(models.glob(".*.tmp")) == []  # a temp file the kill may have left was cleaned up
    assert (models / "model.pt").is_file()
    _every_pt_loads(models)


# Runs a training whose n-th training-checkpoint write is killed after its first bytes (SIGKILL, mid-write).
KILL_DURING_SAVE = """
import json, os, signal, sys
import torch
from monai.bundle import run

real_save, training_saves = torch.save, []

def save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and "trainer" in obj:
        training_saves.append(obj["trainer"]["iteration"])
        if len(training_saves) == int(os.environ["KILL_AT_SAVE"]):
            f.write(b"the first bytes of a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

torch.save = save
run(config_file=json.loads(sys.argv[1]), **json.loads(sys.argv[2]))
"""


def test_sigkill_while_writing_a_checkpoint(synth_dir: Path, tmp_path: Path, tiny_unet_def: dict) -> None:
    """Killed while writing checkpoint_epoch=2.pt: checkpoint_epoch=1.pt and model.pt stay intact and resumable."""
    root = _bundle_copy(tmp_path)
    models = root / "models"
    overrides = {
        "bundle_root": str(root),
        "dataset_dir": str(synth_dir),
        "max_epochs": 2,
        "network_def": tiny_unet_def,
        **{k: json.loads(v) for k, v in TINY.items()},
    }
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SAVE, json.dumps(workflow_configs(root, "train")), json.dumps(overrides)],
        capture_output=True,
        text=True,
        env={**ENV, "KILL_AT_SAVE": "2"},
        cwd=tmp_path,
        timeout=TIMEOUT_S,
    )
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    files = _every_pt_loads(models)
    assert sorted(files) == ["checkpoint_epoch=1.pt", "model.pt"]  # the previous checkpoint was not removed first
    assert files["checkpoint_epoch=1.pt"]["trainer"]["iteration"] == EPOCH_LENGTH
    partial = list(models.glob(".checkpoint_epoch=2.pt.*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size == len(b"the first bytes of a checkpoint")

    log = _run_to_completion(
        _command(root, synth_dir, max_epochs="2", resume="true", network_def=json.dumps(tiny_unet_def)), tmp_path
    )
    assert f"resumed from '{models / 'checkpoint_epoch=1.pt'}': epoch 1, iteration {EPOCH_LENGTH}" in log
    assert "left over from a checkpoint write that was interrupted" in log
    files = _every_pt_loads(models)
    assert sorted(files) == ["checkpoint_epoch=2.pt", "checkpoint_final.pt", "model.pt"]
    assert files["checkpoint_final.pt"]["trainer"]["iteration"] == 2 * EPOCH_LENGTH
    assert files["checkpoint_final.pt"]["optimizer"]["state"][0]["step"] == 2 * EPOCH_LENGTH
    assert list(models.glob(".*.tmp")) == []
