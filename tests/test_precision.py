"""precision: auto | fp32 | bf16 — which one auto picks, and that bf16 runs the network in bf16 with fp32 outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks.nets import BasicUNet

from monai_isl import precision as prec
from monai_isl.runtime import WindowParallelInferer


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    with_bf16 = tmp_path / "a"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n")
    without = tmp_path / "b"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert prec.cpu_bf16_flags(str(with_bf16)) == ("avx512_bf16",)
    assert prec.cpu_bf16_flags(str(without)) == ()
    assert prec.cpu_bf16_flags(str(tmp_path / "missing")) == ()


@pytest.mark.parametrize(("flags", "expected"), [(("amx_bf16",), "bf16"), (("avx512_bf16",), "bf16"), ((), "fp32")])
def test_auto_picks_bf16_only_with_bf16_units(flags: tuple, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prec, "cpu_bf16_flags", lambda: flags)
    assert prec.resolve_precision("auto", "cpu") == expected
    assert prec.resolve_precision("fp32", "cpu") == "fp32"  # explicit values are kept
    assert prec.resolve_precision("BF16", "cpu") == "bf16"


def test_unknown_precision_and_bf16_on_cuda_are_refused() -> None:
    with pytest.raises(ValueError, match="precision 'fp16'"):
        prec.resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="--amp true"):
        prec.resolve_precision("bf16", "cuda:0")
    assert prec.resolve_precision("auto", "cuda:0") == "fp32"


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(8, 8, 16, 16, 32, 8)).eval()


def test_bf16_runs_the_convolutions_in_bf16_and_returns_fp32() -> None:
    net = _net()
    seen: list[torch.dtype] = []
    net.conv_0.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        ref = net(x)
        out = prec.with_precision(net, "bf16")(x)
    assert seen == [torch.float32, torch.bfloat16]  # the fp32 call, then the bf16 one
    assert out.dtype == torch.float32
    assert not torch.equal(out, ref)  # really computed differently ...
    assert torch.allclose(out, ref, atol=0.05 * ref.abs().max().item())  # ... to bf16's precision
    assert prec.with_precision(net, "fp32") is net


def test_window_inferer_with_bf16_in_worker_threads_matches_fp32() -> None:
    """Autocast is per thread: the parallel windows must run under it too (the hook sees only bf16)."""
    net = _net()
    seen: set[torch.dtype] = set()
    net.conv_0.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    x = torch.rand(1, 1, 96, 96)
    kwargs = {"roi_size": (64, 64), "sw_batch_size": 4, "overlap": 0.25, "threads": 2}
    with torch.no_grad():
        ref = WindowParallelInferer(**kwargs)(x, net)
        seen.clear()
        out = WindowParallelInferer(**kwargs, precision="bf16")(x, net)
    assert seen == {torch.bfloat16} and out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=0.05 * ref.abs().max().item())


def test_training_inferer_backpropagates_under_bf16() -> None:
    net = _net().train()
    x = torch.rand(2, 1, 64, 64)
    out = prec.PrecisionInferer("bf16")(x, net)
    assert out.dtype == torch.float32
    out.mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("bundle", ["dapi_isl", "cellmask_isl", "nucleus_seg", "cell_instance_seg"])
@pytest.mark.parametrize("workflow", ["train", "inference"])
def test_every_bundle_config_hands_the_precision_to_its_inferers(bundle: str, workflow: str) -> None:
    from monai.bundle import ConfigParser

    from monai_isl.bundle import workflow_configs

    root = Path(__file__).resolve().parents[1] / "bundles" / bundle
    parser = ConfigParser()
    parser.read_config(workflow_configs(root, workflow))
    parser.update({"precision": "bf16", "device": "$torch.device('cpu')"})
    ids = ["train#inferer", "validate#inferer"] if workflow == "train" else ["inferer"]
    for key in ids:
        assert parser.get_parsed_content(key).precision == "bf16", key
    parser.update({"precision": "fp16"})
    parser.parse()
    with pytest.raises(Exception) as info:  # noqa: B017  (MONAI wraps it; the cause names the value)
        parser.get_parsed_content(ids[0])
    chain, err = [], info.value
    while err is not None:
        chain.append(str(err))
        err = err.__cause__ or err.__context__
    assert any("precision 'fp16'" in m for m in chain)


def test_bf16_keeps_the_decoder_and_heads_of_the_bundle_network_in_fp32() -> None:
    """The encoder and the decoder's first blocks run in bf16; the decoder's last block and the output heads in fp32
    (their resolution decides the watershed)."""
    from monai_isl.networks import cell_network

    net = cell_network(in_channels=1, init="none").eval()
    unet = net[0]
    seen: dict[str, torch.dtype] = {}
    first_conv = next(m for m in unet.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: seen.__setitem__("encoder", o.dtype))
    unet.decoder.blocks[0].register_forward_hook(lambda m, i, o: seen.__setitem__("decoder_first", o.dtype))
    unet.decoder.blocks[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("decoder_last", o.dtype))
    unet.segmentation_head.register_forward_hook(lambda m, i, o: seen.__setitem__("head", o.dtype))
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        ref = net(x)
        out = prec.with_precision(net, "bf16")(x)
    assert seen == {
        "encoder": torch.bfloat16,
        "decoder_first": torch.bfloat16,
        "decoder_last": torch.float32,
        "head": torch.float32,
    }
    assert out.dtype == torch.float32 and torch.allclose(out, ref, atol=0.05 * ref.abs().max().item())
    assert set(net.state_dict()) == set(cell_network(in_channels=1, init="none").state_dict())  # weights untouched
