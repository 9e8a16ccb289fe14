"""Numerical precision of the networks: ``precision: auto | fp32 | bf16`` in every bundle config.

On CPUs with bfloat16 units (Intel AMX, AMD/Intel AVX512-BF16) oneDNN runs the FlexibleUNet-densenet121 about
twice as fast in bf16 autocast as in fp32 (``benchmarks/bench_precision.py`` prints the ratio measured in its own
run; ``benchmarks/README.md`` has the development CPU's figures). Without such units bf16 is emulated and several
times *slower* (FACTS.md), so ``auto`` picks bf16 only where ``/proc/cpuinfo`` lists ``amx_bf16`` or
``avx512_bf16``, and says so at start. MONAI's trainers and evaluators autocast on CUDA only (``amp``); here the
inferers autocast instead (:class:`PrecisionInferer` for training, ``WindowParallelInferer`` for validation,
evaluation and inference), so the same configs work on either device. The network runs in bf16 except its output
heads and the decoder's last, full-resolution block (:func:`keep_fp32_modules`, for the distance map's
resolution); its output is cast back to float32 before the loss, the post-processing and the metrics, and weights
and optimiser state stay float32 (autocast, not a bf16 model), so checkpoints are the same either way. On CUDA
``auto`` means fp32 here and ``--amp true`` keeps MONAI's float16 autocast. The equivalence gate (instance mAP of
bf16 against fp32 >= 0.99, stain PCC within 0.005) is ``benchmarks/bench_precision.py``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from monai.inferers import SimpleInferer

__all__ = [
    "PRECISIONS",
    "cpu_bf16_flags",
    "resolve_precision",
    "autocast",
    "with_precision",
    "keep_fp32_modules",
    "PrecisionInferer",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
#: /proc/cpuinfo flags of hardware bfloat16 arithmetic that oneDNN uses
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The :data:`BF16_CPU_FLAGS` this CPU has (empty where ``cpuinfo`` is missing: not Linux, or unknown)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return tuple(f for f in BF16_CPU_FLAGS if f in flags)


def resolve_precision(precision: Any = "auto", device: Any = "cpu", announce: bool = True) -> str:
    """``fp32`` or ``bf16``: ``precision`` as given, or for ``auto`` bf16 on a CPU with bf16 units, else fp32.

    Raises:
        ValueError: an unknown value (the message lists the known ones).
    """
    value = str(precision).lower()
    if value not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {list(PRECISIONS)}")
    on_cpu = torch.device(device).type == "cpu"
    if value == "auto":
        flags = cpu_bf16_flags() if on_cpu else ()
        value = "bf16" if flags else "fp32"
        why = (
            f"the CPU has {', '.join(flags)}"
            if flags
            else ("CUDA: use --amp true for float16" if not on_cpu else "no bf16 units in this CPU")
        )
    else:
        why = "set"
    if value == "bf16" and not on_cpu:
        raise ValueError(f"precision bf16 is for CPUs; on {device} use --amp true (MONAI's CUDA autocast)")
    if announce:
        logger.info("precision: %s (%s; --precision fp32|bf16|auto)", value, why)
    return value


@contextlib.contextmanager
def autocast(precision: str) -> Iterator[None]:
    """bf16 autocast on the CPU for ``precision == "bf16"``; nothing for ``fp32``."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


def _as_float(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, dict):
        return {k: _as_float(v) for k, v in output.items()}
    if isinstance(output, (list, tuple)):
        return type(output)(_as_float(v) for v in output)
    return output


#: modules kept in float32 under bf16: the output heads and the last (full-resolution) block of the U-Net decoder.
#: bf16's 8-bit mantissa rounds a distance map of 0..255 to steps of 1-2 near the peaks, which moves h-maxima
#: markers. Measured on one synthetic test field (``benchmarks/bench_precision.py``; instance mAP of bf16 against
#: fp32 / |delta PCC| of the stain / 512x512 window fp32-to-bf16 time ratio, 1 thread): everything in bf16
#: 0.871 / 0.0055 / 1.7x; heads in fp32 0.958 / 0.0036; heads and the whole decoder 0.991 / 0.0002 / 1.4x; heads and
#: the decoder's last block 0.995 / 0.0003 / 2.0x (kept: inside the gate of >= 0.99 / <= 0.005, and fastest).
FP32_MODULES = ("SegmentationHead", "TransferHead", "CellOutput", "ShiftedSigmoid")
#: decoders whose last block (``blocks[-1]``) also stays in float32
FP32_LAST_BLOCK_OF = ("UNetDecoder",)


def _fp32_forward(forward: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cpu", enabled=False):
            return forward(*_as_float(args), **kwargs)

    run._isl_fp32 = True  # type: ignore[attr-defined]
    return run


def keep_fp32_modules(network: Any) -> None:
    """Make the :data:`FP32_MODULES` of ``network`` and the last block of its decoder (:data:`FP32_LAST_BLOCK_OF`)
    run in float32 even under autocast (idempotent; the
    weights and the state dict are untouched: only the modules' ``forward`` is wrapped)."""
    modules = list(network.modules()) if isinstance(network, torch.nn.Module) else []
    chosen = [m for m in modules if type(m).__name__ in FP32_MODULES]
    chosen += [m.blocks[-1] for m in modules if type(m).__name__ in FP32_LAST_BLOCK_OF and len(m.blocks)]
    for module in chosen:
        if not getattr(module.forward, "_isl_fp32", False):
            module.forward = _fp32_forward(module.forward)


def with_precision(network: Callable[..., Any], precision: str) -> Callable[..., Any]:
    """``network`` run under :func:`autocast` (in whichever thread calls it) with float32 outputs; its heads and
    the decoder's last block (:func:`keep_fp32_modules`) stay in float32."""
    if precision != "bf16":
        return network
    keep_fp32_modules(network)

    def run(*args: Any, **kwargs: Any) -> Any:
        with autocast(precision):
            return _as_float(network(*args, **kwargs))

    return run


class PrecisionInferer(SimpleInferer):
    """MONAI's ``SimpleInferer`` under :func:`autocast`: the training forward in bf16 where ``precision`` is bf16
    (the backward follows autocast's casts), returning float32 for the loss."""

    def __init__(self, precision: str = "fp32") -> None:
        super().__init__()
        self.precision = precision

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return super().__call__(inputs, with_precision(network, self.precision), *args, **kwargs)
