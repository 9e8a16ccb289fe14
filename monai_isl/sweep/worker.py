"""One sweep run in its own process: train, evaluate on the test set, infer the example image.

The parent (:func:`execute`) writes ``runs/<run>/run.json`` and starts ``python -m monai_isl.sweep RUN.json``, which
calls :func:`main` here, with stdout and stderr in ``run.log``: a crash, a CUDA error or a memory blow-up ends that
run only, and each run starts with fresh random and CUDA states. Every bundle call is also written to
``commands.txt`` as the equivalent ``python -m monai.bundle run`` line, for repeating it by hand.

Resuming: ``trained.json`` marks a finished training (an interrupted one continues from its newest checkpoint),
``done.json`` a finished run (never touched again).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .. import bundle as bundle_utils


class SweepError(RuntimeError):
    """A run of the sweep failed; the message names its log."""


def bundle_command(bundle: str, workflow: str, overrides: dict[str, Any]) -> list[str]:
    """The ``python -m monai.bundle run`` command line of ``workflow`` with ``overrides`` (as in commands.txt)."""
    root = bundle_utils.bundle_root(bundle)
    configs = bundle_utils.workflow_configs(root, workflow)
    config_file = configs[0] if len(configs) == 1 else "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_file, "--bundle_root", root]
    for key, value in overrides.items():
        cmd += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    return cmd


def _log_command(folder: Path, bundle: str, workflow: str, overrides: dict[str, Any]) -> None:
    """Append the equivalent ``python -m monai.bundle run`` command to commands.txt, for repeating a run by hand."""
    cmd = bundle_command(bundle, workflow, overrides)
    with open(folder / "commands.txt", "a") as f:
        f.write(" ".join(_quote(c) for c in cmd) + "\n")


def _quote(arg: str) -> str:
    """Shell quoting that keeps a config list readable: ``"['a.yaml','b.yaml']"`` rather than shlex's escapes."""
    if not any(ch in arg for ch in " [],{}'\"$`\\"):
        return arg
    if "'" in arg and not any(ch in arg for ch in '"$`\\'):
        return f'"{arg}"'
    return shlex.quote(arg)


def _run(folder: Path, bundle: str, workflow: str, overrides: dict[str, Any]) -> None:
    _log_command(folder, bundle, workflow, overrides)
    bundle_utils.run_bundle(bundle, workflow, **overrides)


def main(run_file: str | os.PathLike) -> None:
    """Train, evaluate and (for the example image) infer the run described by ``run_file`` (a run.json).

    Raises:
        FileNotFoundError: training ended without the model the run evaluates.
    """
    run = json.loads(Path(run_file).read_text())
    folder = Path(run["dir"])
    models, marker = folder / "models", folder / "trained.json"
    if not marker.is_file():
        train = {**run["train"], "ckpt_dir": str(models), "output_dir": str(folder / "logs")}
        if any(p for pattern in bundle_utils.CHECKPOINT_PATTERNS for p in models.glob(pattern)):
            train["resume"] = True
            print(f"resuming {run['id']} from its last checkpoint in {models}", flush=True)
        start = time.time()
        _run(folder, run["bundle"], "train", train)
        marker.write_text(json.dumps({"train_seconds": time.time() - start}) + "\n")
    # model.pt: the best validated network (validation before the first step and after the last, too), or without
    # a validation section the final one; it also holds what was fitted after training (h auto)
    checkpoint = models / "model.pt"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"run {run['id']}: expected the trained model '{checkpoint}'")
    if run["evaluate"]:
        evaluate = {**run["evaluate"], "section": "test", "checkpoint": str(checkpoint)}
        _run(folder, run["bundle"], "evaluate", {**evaluate, "output_dir": str(folder / "eval")})
    if run["example"]:
        example = {**run["example"], "section": "example", "checkpoint": str(checkpoint)}
        _run(folder, run["bundle"], "inference", {**example, "output_dir": str(folder / "example")})
    done = {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "checkpoint": str(checkpoint)}
    done.update(json.loads(marker.read_text()))
    (folder / "done.json").write_text(json.dumps(done, indent=2) + "\n")
    # a finished run is never retrained: its per-epoch/iteration training states (~155 MB each) only fill the disk;
    # model.pt and checkpoint_final.pt (the final training state, for fine-tuning further) stay
    for pattern in ("checkpoint_epoch=*.pt", "checkpoint_iteration=*.pt"):
        for intermediate in models.glob(pattern):
            intermediate.unlink()


def is_done(run: dict[str, Any]) -> bool:
    """Whether the run finished earlier (its ``done.json`` exists)."""
    return (Path(run["dir"]) / "done.json").is_file()


def execute(run: dict[str, Any]) -> None:
    """Run ``run`` in a child process (``python -m monai_isl.sweep run.json``), its output appended to run.log.

    Raises:
        SweepError: the child failed; the message holds the end of its log.
    """
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
