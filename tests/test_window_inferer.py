"""WindowParallelInferer: MONAI's sliding window, each window computed alone, several at once in CPU threads."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest
import torch
from monai.inferers import SlidingWindowInferer

from monai_isl.runtime import WindowParallelInferer, default_window_threads


class Recorder(torch.nn.Module):
    """A small conv net with BatchNorm that records, per call, the thread, its torch thread count and grad mode."""

    def __init__(self, out_channels: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.BatchNorm2d(4),
            torch.nn.ReLU(),
            torch.nn.Conv2d(4, out_channels, 1),
        )
        self.calls: list[dict] = []
        self.lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.calls.append(
                {
                    "thread": threading.current_thread().name,
                    "torch_threads": torch.get_num_threads(),
                    "grad": torch.is_grad_enabled(),
                    "batch": x.shape[0],
                }
            )
        return self.body(x)


def _field() -> torch.Tensor:
    return torch.rand(1, 1, 150, 130, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("threads,batch", [(1, 1), (1, 5), (2, 1), (2, 3), (3, 16)])
def test_same_output_as_monai_sliding_window(threads: int, batch: int) -> None:
    net = Recorder().eval()
    x = _field()
    with torch.no_grad():
        expected = SlidingWindowInferer(48, batch, 0.25, mode="gaussian")(x, net.body)
        out = WindowParallelInferer(48, batch, 0.25, mode="gaussian", threads=threads)(x, net)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert not out.requires_grad
    assert all(c["batch"] == 1 for c in net.calls), "on a CPU every window goes through the network alone"
    assert len(net.calls) == 16  # 4 x 4 windows of 48 with overlap 0.25 on 150 x 130


def test_windows_run_in_worker_threads_with_one_torch_thread_and_the_callers_grad_mode() -> None:
    net = Recorder().eval()
    main_threads = torch.get_num_threads()
    with torch.inference_mode():
        out = WindowParallelInferer(48, 16, 0.25, threads=2)(_field(), net)
    assert torch.get_num_threads() == main_threads, "the caller's thread count is left alone"
    assert not out.requires_grad
    workers = [c for c in net.calls if c["thread"].startswith("window")]
    assert len(workers) == 16 and {c["torch_threads"] for c in workers} == {1}
    assert not any(c["grad"] for c in net.calls), "no_grad / inference_mode must reach the worker threads"
    with torch.enable_grad():
        out = WindowParallelInferer(48, 4, 0.25, threads=2)(_field(), net)
    assert out.requires_grad, "an enabled grad mode reaches the worker threads too"


def test_windows_beyond_whole_rounds_run_in_the_callers_thread_with_all_cores() -> None:
    """16 windows in passes of 5 with 2 threads: 4 per pass in the pool, the 5th and the last pass's one alone."""
    net = Recorder().eval()
    main_threads = torch.get_num_threads()
    with torch.no_grad():
        out = WindowParallelInferer(48, 5, 0.25, mode="gaussian", threads=2)(_field(), net)
        expected = SlidingWindowInferer(48, 5, 0.25, mode="gaussian")(_field(), net.body)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    in_pool = [c for c in net.calls if c["thread"].startswith("window")]
    alone = [c for c in net.calls if not c["thread"].startswith("window")]
    assert len(in_pool) == 12 and {c["torch_threads"] for c in in_pool} == {1}
    assert len(alone) == 4 and {c["torch_threads"] for c in alone} == {main_threads}
    assert not any(c["grad"] for c in net.calls)


def test_training_mode_and_autocast_fall_back_to_monai() -> None:
    net = Recorder().train()
    with torch.no_grad():
        WindowParallelInferer(48, 4, 0.25, threads=2)(_field(), net)
    assert [c["batch"] for c in net.calls] == [4, 4, 4, 4], "BatchNorm in training mode: one call per pass"
    assert all(not c["thread"].startswith("window") for c in net.calls)
    net = Recorder().eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        WindowParallelInferer(48, 4, 0.25, threads=2)(_field(), net)
    assert [c["batch"] for c in net.calls] == [4, 4, 4, 4]


def test_dict_and_tuple_outputs() -> None:
    net = Recorder(out_channels=3).eval()
    x = _field()
    with torch.no_grad():
        expected = SlidingWindowInferer(64, 4, 0.25)(x, net.body)
        as_dict = WindowParallelInferer(64, 4, 0.25, threads=2)(x, lambda w: {"a": net(w), "b": net(w)[:, :1]})
        as_tuple = WindowParallelInferer(64, 4, 0.25, threads=2)(x, lambda w: (net(w), net(w)[:, 1:]))
    torch.testing.assert_close(as_dict["a"], expected)
    torch.testing.assert_close(as_dict["b"], expected[:, :1])
    torch.testing.assert_close(as_tuple[0], expected)
    torch.testing.assert_close(as_tuple[1], expected[:, 1:])


def test_copy_pickle_and_default_threads() -> None:
    inferer = WindowParallelInferer(32, 4, threads=2)
    with torch.no_grad():
        inferer(_field(), Recorder().eval())
    assert inferer._pool is not None
    for clone in (copy.deepcopy(inferer), pickle.loads(pickle.dumps(inferer))):
        assert clone.threads == 2 and clone._pool is None
    assert default_window_threads("cpu") == torch.get_num_threads()
    assert default_window_threads(torch.device("cpu")) == torch.get_num_threads()
    assert default_window_threads("cuda:0") == 1


@pytest.mark.parametrize("threads", [1, 2])
def test_field_smaller_than_the_window_is_not_zero_padded(threads: int) -> None:
    """A 40x100 field under 48x48 windows: rows are one window of 40 (not 40 + 8 zero rows), so the output is the
    network's own on those rows; MONAI's zero-padded window differs at the border (the net's bias sees zeros)."""
    net = Recorder().eval()
    x = torch.rand(1, 1, 40, 100, generator=torch.Generator().manual_seed(2)) + 1.0  # far from the zero padding
    with torch.no_grad():
        out = WindowParallelInferer(48, 4, 0.25, mode="gaussian", threads=threads)(x, net)
        reference = SlidingWindowInferer((40, 48), 4, 0.25, mode="gaussian")(x, net.body)  # the window fitted by hand
        padded = SlidingWindowInferer(48, 4, 0.25, mode="gaussian")(x, net.body)  # MONAI: pads rows with zeros
        whole = net.body(x[:, :, :, :48])
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[..., :30], whole[..., :30], rtol=1e-5, atol=1e-6)  # the first window alone there
    assert (out - padded).abs().amax() > 1e-3, "the zero-padded window must differ, else this test shows nothing"
    assert all(c["batch"] == 1 for c in net.calls)
    small = torch.rand(1, 1, 20, 24)
    with torch.no_grad():  # smaller than the window on both axes: one pass of the network over the whole field
        torch.testing.assert_close(WindowParallelInferer(48, 4, 0.25, threads=threads)(small, net), net.body(small))
