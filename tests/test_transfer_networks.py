"""ISL transfer networks: weights restored exactly, the paper's activation and head, shapes and gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monai_isl.networks import (
    DenseNet121Encoder,
    PaddedFlexibleUNet,
    TransferHead,
    cell_network,
    init_of_checkpoint,
    nucleus_network,
)


def _isl_checkpoint(tmp_path: Path, in_channels: int, name: str = "model.pt") -> tuple[Path, dict]:
    torch.manual_seed(0)
    unet = PaddedFlexibleUNet(in_channels=in_channels, out_channels=1, backbone="densenet121", spatial_dims=2)
    with torch.no_grad():  # non-default BN statistics, so a forgotten buffer would show
        for name_, buf in unet.named_buffers():
            if name_.endswith("running_mean"):
                buf.normal_()
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    torch.save(state, tmp_path / name)
    return tmp_path / name, state


def test_nucleus_isl_restores_every_tensor_and_shifts_the_sigmoid(tmp_path: Path) -> None:
    ckpt, state = _isl_checkpoint(tmp_path, 3)
    net = nucleus_network(in_channels=3, init="isl", isl_checkpoint=ckpt, sigmoid_slope=2.0).eval()
    restored = net[0].state_dict()
    assert set(restored) == set(state)
    for key, value in state.items():
        assert torch.equal(restored[key], value), key
    x = torch.rand(2, 3, 64, 64)
    reference = PaddedFlexibleUNet(in_channels=3, out_channels=1, backbone="densenet121", spatial_dims=2)
    reference.load_state_dict(state)
    reference.eval()
    with torch.no_grad():
        expected = 1.0 / (1.0 + torch.exp(-2.0 * (reference(x) - 0.5)))
        torch.testing.assert_close(net(x), expected)


def test_activation_travels_with_the_checkpoint(tmp_path: Path) -> None:
    ckpt, _ = _isl_checkpoint(tmp_path, 3)
    trained = nucleus_network(init="isl", isl_checkpoint=ckpt)
    rebuilt = nucleus_network(init="none", load_pretrained=False)
    assert float(rebuilt[1].shift) == 0.0
    rebuilt.load_state_dict(trained.state_dict())
    assert float(rebuilt[1].shift) == 0.5 and float(rebuilt[1].slope) == 1.0


def test_isl_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ISL checkpoint not found: .*nope\.pt'. Train dapi_isl first"):
        nucleus_network(init="isl", isl_checkpoint=tmp_path / "nope.pt")
    ckpt, _ = _isl_checkpoint(tmp_path, 1)
    with pytest.raises(RuntimeError, match="does not fit the network"):
        nucleus_network(in_channels=3, init="isl", isl_checkpoint=ckpt)
    with pytest.raises(ValueError, match="init must be one of"):
        cell_network(init="imagenet21k")


def test_imagenet_init_loads_the_encoder(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = DenseNet121Encoder(in_channels=3).state_dict()
    torch.save({k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}, tmp_path / "imagenet.pth")
    net = cell_network(in_channels=1, init="imagenet", imagenet_weights=str(tmp_path / "imagenet.pth"))
    encoder = net[0].encoder.state_dict()
    torch.testing.assert_close(encoder["features.conv0.weight"], source["features.conv0.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(encoder["features.norm5.running_var"], source["features.norm5.running_var"])
    assert isinstance(net[1], torch.nn.Identity)


def test_cell_isl_head_shapes_gradients_and_no_final_relu(tmp_path: Path) -> None:
    ckpt, state = _isl_checkpoint(tmp_path, 1)
    net = cell_network(in_channels=1, init="isl", isl_checkpoint=ckpt)
    assert isinstance(net[1], TransferHead) and isinstance(net[1][-1], torch.nn.Conv2d)
    for key, value in state.items():
        assert torch.equal(net[0].state_dict()[key], value), key
    with torch.no_grad():
        net[1][-1].bias.fill_(-5.0)  # logits can go negative (a final ReLU would forbid it)
    out = net(torch.rand(2, 1, 64, 48))
    assert out.shape == (2, 2, 64, 48) and (out[:, 1] < 0).any()
    out.sum().backward()
    assert net[1][0].weight.grad is not None and net[0].encoder.features.conv0.weight.grad is not None
    baseline = cell_network(in_channels=1, init="none")
    assert baseline(torch.rand(1, 1, 64, 64)).shape == (1, 2, 64, 64)


def test_init_of_checkpoint(tmp_path: Path) -> None:
    ckpt, _ = _isl_checkpoint(tmp_path, 1)
    torch.save(cell_network(1, "isl", ckpt).state_dict(), tmp_path / "isl.pt")
    torch.save({"model": cell_network(1, "none").state_dict()}, tmp_path / "base.pt")
    assert init_of_checkpoint(tmp_path / "isl.pt") == "isl"
    assert init_of_checkpoint(tmp_path / "base.pt") == "none"
    assert init_of_checkpoint(tmp_path / "missing.pt", default="isl") == "isl"


def test_cell_output_gain_and_legacy_checkpoints(tmp_path: Path) -> None:
    """The distance gain (255 by default) and the ISL head's width (8 by default) are saved with the model, and a
    checkpoint from before ``CellOutput`` (``Sequential(unet, head)``) still loads strictly, as gain 1 (the network it
    was trained as); a width-2 (paper) head is rebuilt at width 2 from its weights.
    """
    from monai_isl.networks.transfer import (
        DEFAULT_DISTANCE_GAIN,
        DEFAULT_HEAD_CHANNELS,
        CellOutput,
        head_channels_of_checkpoint,
    )

    paper = cell_network(1, "isl", load_pretrained=False, head_channels=2, distance_gain=1.0)
    isl = cell_network(1, "isl", load_pretrained=False)
    base = cell_network(1, "none", load_pretrained=False, distance_gain=3.0)
    assert DEFAULT_DISTANCE_GAIN == 255.0 and DEFAULT_HEAD_CHANNELS == 8
    assert isinstance(isl[2], CellOutput) and float(isl[2].distance_gain) == 255.0
    assert isl[1][0].out_channels == 8 and paper[1][0].out_channels == 2
    assert float(base[2].distance_gain) == 3.0
    assert float(cell_network(1, "none", load_pretrained=False)[2].distance_gain) == 255.0
    assert head_channels_of_checkpoint(tmp_path / "missing.pt") == 8
    legacy = torch.nn.Sequential(paper[0], paper[1])  # the old layout (the paper's width-2 head), same weights
    torch.save(legacy.state_dict(), tmp_path / "old.pt")
    assert init_of_checkpoint(tmp_path / "old.pt") == "isl"
    width = head_channels_of_checkpoint(tmp_path / "old.pt")  # as evaluate.yaml / inference.yaml rebuild it
    rebuilt = cell_network(1, init_of_checkpoint(tmp_path / "old.pt"), load_pretrained=False, head_channels=width)
    rebuilt.load_state_dict(torch.load(tmp_path / "old.pt", weights_only=True), strict=True)
    assert float(rebuilt[2].distance_gain) == 1.0
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), legacy.eval()(x))
    torch.save({"model": isl.state_dict()}, tmp_path / "wide.pt")
    assert (
        head_channels_of_checkpoint(tmp_path / "wide.pt") == 8 and head_channels_of_checkpoint(tmp_path / "old.pt") == 2
    )
    assert init_of_checkpoint(tmp_path / "wide.pt") == "isl"
    torch.save(base.state_dict(), tmp_path / "base.pt")
    assert init_of_checkpoint(tmp_path / "base.pt") == "none"


def test_param_groups_split_head_and_network() -> None:
    from monai_isl.networks.transfer import param_groups

    net = cell_network(1, "isl", load_pretrained=False)
    body, head = param_groups(net, 1e-4, 1e-2)
    assert body["lr"] == 1e-4 and head["lr"] == 1e-2
    assert {id(p) for p in head["params"]} == {id(p) for p in net[1].parameters()}
    assert len(body["params"]) + len(head["params"]) == len(list(net.parameters()))
    assert param_groups(net, 1e-4)[1]["lr"] == pytest.approx(1e-3)  # head_lr None: 10x
    (only,) = param_groups(cell_network(1, "none", load_pretrained=False), 1e-3, 1e-2)  # no head parameters
    assert only["lr"] == 1e-3
    torch.optim.Adam(param_groups(net, 1e-4, 1e-2))
