"""Tests for the densenet121 FlexibleUNet encoder, its registration and offline ImageNet loading.

The fake ImageNet checkpoint is built from an independent table of torchvision's densenet121 layout (old key format,
``norm.1``/``conv.2``) and checked against a functional re-implementation of torchvision's forward pass, so the
loader's key mapping is not tested against itself.
"""

from __future__ import annotations

import importlib
import logging
import math
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

import monai_isl.networks
from monai_isl.networks import (
    DENSENET121_IMAGENET_FILE,
    DenseNet121Encoder,
    PaddedFlexibleUNet,
    load_imagenet_weights,
    pad_to_multiple,
)

# torchvision densenet121: (init features, growth rate, bn_size, layers per dense block)
TV_INIT, TV_GROWTH, TV_BN_SIZE, TV_BLOCKS = 64, 32, 4, (6, 12, 24, 16)
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


def torchvision_old_layout() -> OrderedDict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's densenet121 state dict in the old (``densenet121-a639ec97.pth``) format."""
    layout: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    def bn(prefix: str, ch: int) -> None:
        for t in BN_TENSORS:
            layout[f"{prefix}.{t}"] = (ch,)

    layout["features.conv0.weight"] = (TV_INIT, 3, 7, 7)
    bn("features.norm0", TV_INIT)
    ch = TV_INIT
    for b, n_layers in enumerate(TV_BLOCKS, start=1):
        for i in range(1, n_layers + 1):
            p = f"features.denseblock{b}.denselayer{i}"
            c_in = ch + (i - 1) * TV_GROWTH
            bn(f"{p}.norm.1", c_in)
            layout[f"{p}.conv.1.weight"] = (TV_BN_SIZE * TV_GROWTH, c_in, 1, 1)
            bn(f"{p}.norm.2", TV_BN_SIZE * TV_GROWTH)
            layout[f"{p}.conv.2.weight"] = (TV_GROWTH, TV_BN_SIZE * TV_GROWTH, 3, 3)
        ch += n_layers * TV_GROWTH
        if b < len(TV_BLOCKS):
            bn(f"features.transition{b}.norm", ch)
            layout[f"features.transition{b}.conv.weight"] = (ch // 2, ch, 1, 1)
            ch //= 2
    bn("features.norm5", ch)
    layout["classifier.weight"] = (1000, ch)
    layout["classifier.bias"] = (1000,)
    return layout


def to_new_format(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's current key names: ``norm.1`` -> ``norm1``, ``conv.2`` -> ``conv2``."""
    out = {}
    for k, v in state.items():
        for kind in ("norm", "conv", "relu"):
            for j in ("1", "2"):
                k = k.replace(f".{kind}.{j}.", f".{kind}{j}.")
        out[k] = v
    return out


def make_fake_imagenet_state(seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """Random but well-conditioned tensors for every key of the old torchvision layout."""
    g = torch.Generator().manual_seed(seed)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, shape in torchvision_old_layout().items():
        if key.endswith("running_var"):
            v = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("running_mean") or key.endswith("bias"):
            v = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # BN weight
            v = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:  # conv / linear weight, He-scaled
            v = torch.randn(shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))
        state[key] = v
    return state


def reference_features(state: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """torchvision densenet121 (eval) written with torch.nn.functional on old-format keys, smp skip taps."""

    def bn(p: str, t: torch.Tensor) -> torch.Tensor:
        s = {n: state[f"{p}.{n}"] for n in BN_TENSORS}
        return F.batch_norm(t, s["running_mean"], s["running_var"], s["weight"], s["bias"], False, 0.0, 1e-5)

    outs = []
    x = F.relu(bn("features.norm0", F.conv2d(x, state["features.conv0.weight"], stride=2, padding=3)))
    outs.append(x)
    x = F.max_pool2d(x, 3, 2, 1)
    for b, n_layers in enumerate(TV_BLOCKS, start=1):
        feats = [x]
        for i in range(1, n_layers + 1):
            p = f"features.denseblock{b}.denselayer{i}"
            h = torch.cat(feats, 1)
            h = F.conv2d(F.relu(bn(f"{p}.norm.1", h)), state[f"{p}.conv.1.weight"])
            h = F.conv2d(F.relu(bn(f"{p}.norm.2", h)), state[f"{p}.conv.2.weight"], padding=1)
            feats.append(h)
        x = torch.cat(feats, 1)
        if b < len(TV_BLOCKS):
            x = F.relu(bn(f"features.transition{b}.norm", x))
            outs.append(x)
            x = F.avg_pool2d(F.conv2d(x, state[f"features.transition{b}.conv.weight"]), 2, 2)
    outs.append(bn("features.norm5", x))
    return outs


@pytest.fixture(scope="module")
def fake_state() -> OrderedDict[str, torch.Tensor]:
    return make_fake_imagenet_state()


@pytest.fixture(scope="module")
def fake_pth(fake_state: OrderedDict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / DENSENET121_IMAGENET_FILE
    torch.save(fake_state, path)
    return path


def encoder_tensors(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in encoder.state_dict().items() if not k.endswith("num_batches_tracked")}


# ---------------------------------------------------------------- architecture


def test_encoder_strides_and_channels() -> None:
    enc = DenseNet121Encoder(spatial_dims=2, in_channels=3, pretrained=False)
    outs = enc(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [
        (2, 64, 32, 32),
        (2, 256, 16, 16),
        (2, 512, 8, 8),
        (2, 1024, 4, 4),
        (2, 1024, 2, 2),
    ]
    assert DenseNet121Encoder.num_channels_per_output() == [(64, 256, 512, 1024, 1024)]
    assert DenseNet121Encoder.num_outputs() == [5]
    # no classifier; torchvision top-level names
    names = {k.split(".")[1] for k in enc.state_dict()}
    assert names == {"conv0", "norm0", "norm5"} | {f"denseblock{i}" for i in range(1, 5)} | {
        f"transition{i}" for i in range(1, 4)
    }
    assert sum(p.numel() for p in enc.parameters()) == 6_953_856  # torchvision densenet121 minus its classifier


def test_registered_and_params_count() -> None:
    entry = FLEXUNET_BACKBONE.register_dict["densenet121"]
    assert entry["type"] is DenseNet121Encoder
    assert entry["feature_number"] == 5
    net = FlexibleUNet(in_channels=3, out_channels=1, backbone="densenet121", spatial_dims=2)
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == 12_802_481
    assert 12.0e6 <= n_params <= 13.5e6


@pytest.mark.parametrize("in_channels", [1, 3, 5])
def test_flexible_unet_forward_backward(in_channels: int) -> None:
    net = FlexibleUNet(in_channels=in_channels, out_channels=2, backbone="densenet121", spatial_dims=2)
    assert net.encoder.features.conv0.in_channels == in_channels  # registry param dict did not leak
    x = torch.randn(2, in_channels, 64, 64)
    y = net(x)
    assert y.shape == (2, 2, 64, 64)
    y.mean().backward()  # no in-place autograd error
    assert net.encoder.features.conv0.weight.grad is not None


def test_skips_are_not_clobbered() -> None:
    enc = DenseNet121Encoder().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = enc(x)
        f = enc.features
        s2 = torch.relu(f.norm0(f.conv0(x)))
        s4 = torch.relu(f.transition1.norm(f.denseblock1(f.pool0(s2))))
    torch.testing.assert_close(outs[0], s2)
    torch.testing.assert_close(outs[1], s4)
    assert outs[0].min() >= 0 and outs[1].min() >= 0 and outs[4].min() < 0  # ReLU on skips, none after norm5


def test_plain_flexible_unet_size_constraint() -> None:
    """Documents why PaddedFlexibleUNet exists: plain FlexibleUNet needs sizes that are multiples of 4."""
    net = FlexibleUNet(in_channels=1, out_channels=1, backbone="densenet121").eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 36, 44)).shape[2:] == (36, 44)
        assert net(torch.randn(1, 1, 35, 44)).shape[2:] == (36, 44)  # odd size: one too many
        with pytest.raises(RuntimeError):
            net(torch.randn(1, 1, 34, 44))  # ceil(34/2) = 17 odd: decoder concat fails


@pytest.mark.parametrize("size", [(64, 64), (50, 65), (33, 47), (5, 7)])
def test_padded_flexible_unet_any_size(size: tuple[int, int]) -> None:
    net = PaddedFlexibleUNet(in_channels=1, out_channels=3, backbone="densenet121").eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, *size)).shape == (1, 3, *size)


def test_padded_matches_plain_on_multiples_of_32() -> None:
    plain = FlexibleUNet(in_channels=2, out_channels=1, backbone="densenet121").eval()
    padded = PaddedFlexibleUNet(in_channels=2, out_channels=1, backbone="densenet121").eval()
    padded.load_state_dict(plain.state_dict())  # same keys
    x = torch.randn(1, 2, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(padded(x), plain(x))


def test_pad_to_multiple() -> None:
    x = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(1, 2, 3, 5)
    y, size = pad_to_multiple(x, 4)
    assert y.shape == (1, 2, 4, 8) and size == [3, 5]
    torch.testing.assert_close(y[..., :3, :5], x)
    torch.testing.assert_close(y[..., 3, :5], x[..., 2, :])  # replicate
    z, size = pad_to_multiple(y, 4)
    assert z is y and size == [4, 8]


def test_torchscript_matches_eager() -> None:
    torch.manual_seed(0)
    net = FlexibleUNet(in_channels=3, out_channels=1, backbone="densenet121", spatial_dims=2).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-5, rtol=1e-5)


def test_torchscript_padded_odd_size() -> None:
    net = PaddedFlexibleUNet(in_channels=1, out_channels=1, backbone="densenet121").eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, 45, 70)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- registration


def test_registration_idempotent() -> None:
    before = dict(FLEXUNET_BACKBONE.register_dict)
    monai_isl.networks.register_flexunet_backbone()
    importlib.reload(monai_isl.networks)  # re-runs the import-time registration
    importlib.import_module("monai_isl")
    assert FLEXUNET_BACKBONE.register_dict.keys() == before.keys()
    entry = FLEXUNET_BACKBONE.register_dict["densenet121"]
    assert entry is before["densenet121"]  # already registered: left alone
    assert entry["type"] is DenseNet121Encoder
    assert set(entry["parameter"]) == {"spatial_dims", "in_channels", "pretrained"}
    net = FlexibleUNet(in_channels=1, out_channels=1, backbone="densenet121").eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_registration_replaces_stale_class(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the class left by reloading monai_isl.networks.densenet is replaced silently."""
    stale = type("DenseNet121Encoder", (DenseNet121Encoder,), {"__module__": DenseNet121Encoder.__module__})
    stale_entry = dict(FLEXUNET_BACKBONE.register_dict["densenet121"], type=stale)
    monkeypatch.setitem(FLEXUNET_BACKBONE.register_dict, "densenet121", stale_entry)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monai_isl.networks.register_flexunet_backbone()
    assert FLEXUNET_BACKBONE.register_dict["densenet121"]["type"] is DenseNet121Encoder


def test_registration_warns_when_replacing_foreign_class(monkeypatch: pytest.MonkeyPatch) -> None:
    foreign = type("OtherDenseNet", (DenseNet121Encoder,), {"__module__": "somebody.else"})
    monkeypatch.setitem(
        FLEXUNET_BACKBONE.register_dict,
        "densenet121",
        dict(FLEXUNET_BACKBONE.register_dict["densenet121"], type=foreign),
    )
    with pytest.warns(UserWarning, match="Replacing FlexibleUNet backbone"):
        monai_isl.networks.register_flexunet_backbone()
    assert FLEXUNET_BACKBONE.register_dict["densenet121"]["type"] is DenseNet121Encoder


def test_pretrained_setting_does_not_leak(fake_pth: Path) -> None:
    """FlexibleUNet writes pretrained into the shared registry dict; the next build must not reuse it."""
    first = FlexibleUNet(in_channels=3, out_channels=1, backbone="densenet121", pretrained=str(fake_pth))
    second = FlexibleUNet(in_channels=3, out_channels=1, backbone="densenet121")
    w = torch.load(fake_pth, weights_only=True)["features.conv0.weight"]
    torch.testing.assert_close(first.encoder.features.conv0.weight, w)
    assert not torch.equal(second.encoder.features.conv0.weight, w)


# ---------------------------------------------------------------- ImageNet loading


def test_load_old_format_file_matches_reference(
    fake_state: OrderedDict[str, torch.Tensor], fake_pth: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="monai_isl.networks.densenet"):
        enc = DenseNet121Encoder(spatial_dims=2, in_channels=3, pretrained=str(fake_pth)).eval()
    assert "Loaded 604 DenseNet-121 ImageNet tensors" in caplog.text  # 606 layout keys minus 2 classifier
    # spot checks where shapes alone could not tell tensors apart
    f = enc.features
    torch.testing.assert_close(
        f.denseblock1.denselayer3.layers.norm1.weight, fake_state["features.denseblock1.denselayer3.norm.1.weight"]
    )
    torch.testing.assert_close(
        f.denseblock1.denselayer3.layers.norm2.running_var,
        fake_state["features.denseblock1.denselayer3.norm.2.running_var"],
    )
    torch.testing.assert_close(f.transition2.norm.running_mean, fake_state["features.transition2.norm.running_mean"])
    torch.testing.assert_close(f.norm5.bias, fake_state["features.norm5.bias"])
    # every non-classifier tensor lands somewhere exactly once (values are random so they identify the tensor)
    src = [v for k, v in fake_state.items() if not k.startswith("classifier.")]
    dst = list(encoder_tensors(enc).values())
    assert len(src) == len(dst) == 604
    assert sorted(float(t.double().sum()) for t in src) == sorted(float(t.double().sum()) for t in dst)
    # end to end: the whole network computes what torchvision's would with those weights
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        ours = enc.double()(x)
        ref = reference_features({k: v.double() for k, v in fake_state.items()}, x)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_load_new_format_and_wrappers(fake_state: OrderedDict[str, torch.Tensor]) -> None:
    ref = DenseNet121Encoder()
    load_imagenet_weights(ref, dict(fake_state))
    expected = encoder_tensors(ref)
    new = to_new_format(fake_state)
    assert "features.denseblock2.denselayer1.conv2.weight" in new
    no_prefix = {k.removeprefix("features."): v for k, v in new.items()}
    enc = DenseNet121Encoder()
    for source in (new, {"state_dict": new}, {"model": no_prefix}, no_prefix):
        with torch.no_grad():
            for v in encoder_tensors(enc).values():
                v.zero_()
        load_imagenet_weights(enc, source)
        for k, v in encoder_tensors(enc).items():
            assert torch.equal(v, expected[k]), k


def test_pretrained_true_uses_torch_hub_dir(
    fake_state: OrderedDict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(fake_state, checkpoints / DENSENET121_IMAGENET_FILE)
    net = FlexibleUNet(in_channels=3, out_channels=1, backbone="densenet121", pretrained=True)
    torch.testing.assert_close(net.encoder.features.conv0.weight, fake_state["features.conv0.weight"])


def test_missing_file_error_names_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / DENSENET121_IMAGENET_FILE
    with pytest.raises(FileNotFoundError) as err:
        DenseNet121Encoder(pretrained=True)
    assert str(expected) in str(err.value)
    assert "https://download.pytorch.org/models/densenet121-a639ec97.pth" in str(err.value)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        DenseNet121Encoder(pretrained=str(tmp_path / "nowhere.pth"))


def test_partial_state_dict_raises(fake_state: OrderedDict[str, torch.Tensor]) -> None:
    partial = dict(fake_state)
    del partial["features.denseblock3.denselayer7.norm.2.running_var"]
    with pytest.raises(RuntimeError, match=r"denseblock3\.denselayer7\..*norm2\.running_var"):
        load_imagenet_weights(DenseNet121Encoder(), partial)


def test_shape_mismatch_and_unexpected_keys_raise(fake_state: OrderedDict[str, torch.Tensor]) -> None:
    bad = dict(fake_state)
    bad["features.norm5.weight"] = torch.ones(512)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        load_imagenet_weights(DenseNet121Encoder(), bad)
    extra = dict(fake_state)
    extra["features.denseblock4.denselayer17.norm.1.weight"] = torch.ones(1024)  # densenet169 has 32 layers here
    with pytest.raises(RuntimeError, match="unexpected"):
        load_imagenet_weights(DenseNet121Encoder(), extra)


@pytest.mark.parametrize("in_channels", [1, 4])
def test_conv0_adaptation(fake_state: OrderedDict[str, torch.Tensor], in_channels: int) -> None:
    enc = DenseNet121Encoder(in_channels=in_channels)
    load_imagenet_weights(enc, fake_state)
    rgb = fake_state["features.conv0.weight"]
    if in_channels == 1:
        expected = rgb[:, 0:1] + rgb[:, 1:2] + rgb[:, 2:3]
    else:  # R, G, B, R scaled by 3/4
        expected = torch.cat([rgb, rgb[:, 0:1]], 1) * 0.75
    torch.testing.assert_close(enc.features.conv0.weight, expected)
    torch.testing.assert_close(enc.features.norm0.running_var, fake_state["features.norm0.running_var"])
