"""Cell size at inference (monai_isl.scale): a field of cells smaller than the trained range is resampled to it and
segments better; a field inside the range, a model without a stored range, or ``enabled=False`` is predicted once,
unchanged; the fit stores the range and it travels with the state dict."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import SimpleInferer
from scipy import ndimage as ndi
from torch import nn

from monai_isl.instance_fit import store_watershed_params, trained_area_range
from monai_isl.metrics import mean_average_precision
from monai_isl.networks.transfer import CellOutput
from monai_isl.postprocessing import hmaxima_watershed, stored_watershed_params, typical_object_area
from monai_isl.scale import MAX_ZOOM, MIN_ZOOM, ObjectScaleInferer, rescale_factor
from monai_isl.transforms import instance_distance


class ErodingSegmenter(nn.Module):
    """A stand-in for a network trained on one cell size: it finds the bright discs but loses 3 px of each rim, which
    costs a small cell much more of its area than a large one. Output: (per-instance distance, mask logit)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for image in x.detach().cpu().numpy():
            inside = ndi.binary_erosion(image[0] > 0.5, iterations=3)
            labels, _ = ndi.label(inside)
            logit = np.where(inside, 10.0, -10.0)
            out.append(np.stack([instance_distance(labels), logit]).astype(np.float32))
        return torch.from_numpy(np.stack(out))


def _discs(radius: float, size: int = 192, spacing: int = 0) -> np.ndarray:
    """Separate discs of ``radius`` on a grid: instance labels."""
    spacing = spacing or int(3 * radius)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    k = 0
    for cy in range(spacing // 2, size - int(radius) - 1, spacing):
        for cx in range(spacing // 2, size - int(radius) - 1, spacing):
            k += 1
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius] = k
    return labels


def _net(area_range: tuple[float, float] | None) -> nn.Sequential:
    net = nn.Sequential(ErodingSegmenter(), CellOutput(1.0))
    store_watershed_params(net, 30.0, area_range=area_range)
    return net


def _segment(output: torch.Tensor) -> np.ndarray:
    pred = output[0].numpy()
    return hmaxima_watershed(pred[0], 1 / (1 + np.exp(-pred[1])), h=30.0)


def test_rescale_factor() -> None:
    assert rescale_factor(500, 400, 700) == 1.0  # inside
    assert rescale_factor(100, 400, 700) == pytest.approx(2.0)  # 4 x too small in area: x2
    assert rescale_factor(2800, 400, 700) == pytest.approx(0.5)
    assert rescale_factor(350, 400, 700) == 1.0  # x1.07: within MIN_ZOOM, left alone
    assert rescale_factor(400 / MIN_ZOOM**2 - 1, 400, 700) > MIN_ZOOM - 1e-3
    assert rescale_factor(1, 400, 700) == MAX_ZOOM and rescale_factor(1e9, 400, 700) == 1 / MAX_ZOOM
    assert rescale_factor(0, 400, 700) == 1.0 and rescale_factor(100, -1, -1) == 1.0


def test_small_cells_are_resampled_to_the_trained_size_and_segment_better() -> None:
    trained = _discs(12.0)  # the "training" size: ~450 px per cell
    area = typical_object_area(_segment(ErodingSegmenter()(torch.from_numpy(trained[None, None] > 0).float())))
    small = _discs(6.0)  # a field imaged at half the magnification
    image = torch.from_numpy((small > 0)[None, None].astype(np.float32))
    inferer = ObjectScaleInferer(SimpleInferer())
    with torch.no_grad():
        plain = SimpleInferer()(image, _net((0.8 * area, 1.2 * area)))
        rescaled = inferer(image, _net((0.8 * area, 1.2 * area)))
    assert rescaled.shape == plain.shape
    assert 1.6 < inferer.last_factors[0] <= MAX_ZOOM
    before, after = mean_average_precision(small, _segment(plain)), mean_average_precision(small, _segment(rescaled))
    assert after > before + 0.2, (before, after)


@pytest.mark.parametrize("case", ["inside", "no range", "disabled"])
def test_otherwise_the_field_is_predicted_once_unchanged(case: str) -> None:
    labels = _discs(12.0)
    image = torch.from_numpy((labels > 0)[None, None].astype(np.float32))
    area = typical_object_area(_segment(ErodingSegmenter()(image)))
    net = _net(None if case == "no range" else (0.8 * area, 1.2 * area) if case == "inside" else (10.0, 20.0))
    calls = []

    def inner(x: torch.Tensor, network: nn.Module) -> torch.Tensor:
        calls.append(x.shape)
        return network(x)

    out = ObjectScaleInferer(inner, enabled=case != "disabled")(image, net)
    torch.testing.assert_close(out, net(image))
    assert len(calls) == 1


def test_fit_stores_the_range_and_it_round_trips() -> None:
    fields = [_discs(r) for r in (10.0, 11.0, 12.0, 13.0)]
    outputs = [ErodingSegmenter()(torch.from_numpy((y > 0)[None, None].astype(np.float32)))[0].numpy() for y in fields]
    fitted = {"h": 30.0, "sigma": 0.0, "min_area": 0.0, "min_area_fraction": None}
    probs = [1 / (1 + np.exp(-o[1])) for o in outputs]
    low, high = trained_area_range([o[0] for o in outputs], probs, fitted)
    areas = [typical_object_area(_segment(torch.from_numpy(o[None]))) for o in outputs]
    assert (low, high) == pytest.approx((np.percentile(areas, 25), np.percentile(areas, 75)))
    net = _net((low, high))
    rebuilt = nn.Sequential(ErodingSegmenter(), CellOutput(1.0))
    rebuilt.load_state_dict(net.state_dict())
    stored = stored_watershed_params(rebuilt)
    assert (stored["area_low"], stored["area_high"]) == pytest.approx((low, high))
    old = {k: v for k, v in net.state_dict().items() if "area_" not in k}  # a model.pt fitted before the range
    rebuilt.load_state_dict(old, strict=True)
    assert stored_watershed_params(rebuilt)["area_low"] is None
