"""How the bundles' networks run fast: device, memory format, and windows in parallel on a CPU.

On a CPU, oneDNN runs the DenseNet-121 encoder and the U-Net decoder with ~15-20 % less work per 512 x 512 window
on ``channels_last`` (NHWC) tensors than on the default NCHW ones (``benchmarks/README.md``; FACTS.md measured the
encoder alone at 0.27 vs 0.52 s), so the inference and evaluation configs use it; for training (forward +
backward + Adam) it brought nothing on the development CPU, so the training configs leave it off. Converting the
network's 4D weights is enough: a convolution whose weight is ``channels_last`` returns ``channels_last`` output,
so the inputs (1-3 channels, where both layouts are nearly the same) need no conversion, and a checkpoint loads
into the converted network unchanged (``load_state_dict`` copies values, not layouts).

Whole-field prediction on a CPU runs the sliding windows in parallel threads, one core and one window each
(:class:`WindowParallelInferer`), instead of spreading one window's convolutions over all cores: on the 2-core
development machine a 512 x 512 window costs 0.48 s that way against 0.56 s with both cores on one window (most
likely because two threads on one window synchronise after each of the DenseNet's ~120 small layers), a whole
2160 x 2160 field 9 % less, with the same output; inside the bundle, where the DataLoader worker reading the next
field shares the cores, the gain is 0-6 % (``benchmarks/README.md``). At most ``min(sw_threads, sw_batch_size)``
windows are in flight, each with its own activations; only 2 cores were available to measure this.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer
from monai.utils import fall_back_tuple
from torch import nn

from .bundle import as_bool
from .precision import with_precision

__all__ = [
    "prepare_network",
    "WindowParallelInferer",
    "default_window_threads",
    "default_sw_batch_size",
    "distributed_device",
    "distributed_network",
    "init_distributed",
    "end_distributed",
    "on_this_rank",
]


def prepare_network(network: nn.Module, device: Any = None, channels_last: Any = False) -> nn.Module:
    """``network`` moved to ``device`` and, when ``channels_last`` (a bool or ``"true"``/``"false"`` from the
    command line), with its 4D parameters and buffers in ``torch.channels_last``. Returns the same module."""
    if device is not None:
        network = network.to(device)
    if as_bool(channels_last):
        network = network.to(memory_format=torch.channels_last)
    return network


def default_sw_batch_size(device: Any) -> int:
    """Windows cut out and stitched per sliding-window pass: 32 on a CPU (a 2160 x 2160 field of 512 windows in one
    pass; :class:`WindowParallelInferer` still runs them one by one), 4 on a GPU (one batched network call)."""
    return 32 if str(device).startswith("cpu") else 4


def default_window_threads(device: Any) -> int:
    """Windows run in parallel by :class:`WindowParallelInferer`: one per intra-op thread on a CPU, else 1."""
    return torch.get_num_threads() if str(device).startswith("cpu") else 1


class WindowParallelInferer(SlidingWindowInferer):
    """MONAI's ``SlidingWindowInferer`` that, on a CPU, sends each window through the network on its own and runs
    ``threads`` windows at a time in parallel threads with one intra-op thread each.

    Same windows, same Gaussian blending, same output as ``SlidingWindowInferer``; only who computes each window
    changes. On a CPU, ``sw_batch_size`` is then only how many windows are cut out and stitched per pass (memory:
    ~4 bytes x (in + out channels) x window pixels each): several windows per network call cost *more* work per
    window there (the decoder's full-resolution activations leave the cache), and one task per window lets a thread
    that finishes early take the next window instead of waiting. A lone window gets all cores. Falls back to the
    plain sliding window for non-CPU inputs, a network in training mode (BatchNorm statistics must not be updated
    from two threads), autocast, or the ``with_coord`` / ``condition`` variants. The caller's grad mode
    (``no_grad`` / ``inference_mode``) is applied in the worker threads, which do not inherit it.

    ``precision`` ``bf16`` runs each window under CPU bf16 autocast with float32 outputs (``monai_isl.precision``).

    A field smaller than the window along an axis is not padded with zeros up to the window, as MONAI's sliding
    window does: the window shrinks to the field there (the network pads to its stride by replication). A 256x256
    annotated tile in a 512x512 window was seen with a dark frame, which moved the calibrated ISL threshold on it
    (docs/results/real_nucleus_ceiling). Fields at least as large as the window are cut exactly as before.
    """

    def __init__(self, *args: Any, threads: int = 1, precision: str = "fp32", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threads = max(int(threads), 1)
        self.precision = str(precision)
        self._pool: ThreadPoolExecutor | None = None

    def _per_window_ok(self, inputs: torch.Tensor, network: Callable, kwargs: dict[str, Any]) -> bool:
        return (
            inputs.device.type == "cpu"
            and not getattr(network, "training", False)
            and not self.with_coord
            and "condition" not in kwargs
            and not torch.is_autocast_enabled("cpu")
        )

    def fitted_to(self, inputs: torch.Tensor) -> WindowParallelInferer:
        """This inferer, or a shallow copy whose window is no larger than ``inputs`` along any spatial axis."""
        size = tuple(int(s) for s in inputs.shape[2:])
        roi = tuple(int(r) for r in fall_back_tuple(self.roi_size, size))
        fitted = tuple(min(r, s) for r, s in zip(roi, size))
        if fitted == roi:
            return self
        other = copy.copy(self)
        other.roi_size, other.roi_weight_map = fitted, None  # MONAI weights the smaller window itself
        return other

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        fitted = self.fitted_to(inputs)  # the windows' geometry; the thread pool stays this inferer's
        per_window = self._per_window_ok(inputs, network, kwargs)
        network = with_precision(network, self.precision)  # autocast per call: it holds in the worker threads too
        if not per_window:
            return SlidingWindowInferer.__call__(fitted, inputs, network, *args, **kwargs)
        if self._pool is None and self.threads > 1:  # threads with one intra-op thread each (a per-thread setting)
            self._pool = ThreadPoolExecutor(self.threads, "window", torch.set_num_threads, (1,))
        pool, grad, inference = self._pool, torch.is_grad_enabled(), torch.is_inference_mode_enabled()

        def run_window(window: torch.Tensor, *a: Any, **k: Any) -> Any:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return network(window, *a, **k)

        def per_window_network(windows: torch.Tensor, *a: Any, **k: Any) -> Any:
            singles = windows.split(1)
            # Whole rounds of `threads` windows go to the pool; the windows left over (fewer than the threads) run
            # here one after the other with all cores, instead of one core each while the others wait.
            parallel = 0 if pool is None else len(singles) - len(singles) % self.threads
            outputs = list(pool.map(lambda w: run_window(w, *a, **k), singles[:parallel])) if parallel else []
            outputs += [network(w, *a, **k) for w in singles[parallel:]]
            if isinstance(outputs[0], torch.Tensor):
                return torch.cat(outputs)
            if isinstance(outputs[0], dict):
                return {key: torch.cat([o[key] for o in outputs]) for key in outputs[0]}
            return type(outputs[0])(torch.cat(parts) for parts in zip(*outputs))

        return SlidingWindowInferer.__call__(fitted, inputs, per_window_network, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:  # the thread pool cannot be pickled or deep-copied
        state = dict(self.__dict__)
        state["_pool"] = None
        return state


# ---- multi_gpu_train.yaml: one process per GPU (torchrun), DistributedDataParallel --------------------------------


def distributed_device() -> torch.device:
    """This process's device under torchrun: ``cuda:<LOCAL_RANK>`` when there are GPUs, else the CPU (gloo)."""
    import os

    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(backend: str | None, device: Any, seed: int) -> int:
    """Start the process group (once), select this process's GPU and seed it with ``seed + rank``, so every
    process draws its own random crops (DistributedDataParallel copies rank 0's initial weights to all).

    Stands in for train.yaml's seed step: it must run before anything asks for the rank. Returns the rank.
    """
    import torch.distributed as dist
    from monai.utils import set_determinism

    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rank = dist.get_rank()
    set_determinism(seed=int(seed) + rank)
    return rank


def end_distributed() -> None:
    """Close the process group, if one was started."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def distributed_network(network: nn.Module, device: Any = None, channels_last: Any = False) -> nn.Module:
    """:func:`prepare_network`, then wrapped in ``DistributedDataParallel`` (``device_ids`` on a GPU only)."""
    network = prepare_network(network, device, channels_last)
    device_ids = [device] if device is not None and torch.device(device).type == "cuda" else None
    return nn.parallel.DistributedDataParallel(network, device_ids=device_ids)


def on_this_rank(handlers: list[Any], rank0_only: Any) -> list[Any]:
    """The ``handlers`` this process runs: all on rank 0; elsewhere all but instances of ``rank0_only`` (the
    handlers that only write output), since every process must take the same steps otherwise."""
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    return [h for h in handlers if rank == 0 or not isinstance(h, tuple(rank0_only))]
