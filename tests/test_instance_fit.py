"""``h: auto``: the fitted h separates touching cells (also on a scaled-down prediction), the fitted minimum area
drops specks and keeps cells, both travel with the model (state dict, model.pt, TorchScript, a model.pt fitted
before min_area existed), are validated, and the distance gain makes a tiny head reach the target scale."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from torch import nn

from monai_isl.instance_fit import fit_network_watershed, fit_watershed_params, store_watershed_params
from monai_isl.losses import CombinedLoss
from monai_isl.metrics import mean_average_precision
from monai_isl.networks.transfer import (
    DEFAULT_DISTANCE_GAIN,
    DEFAULT_HEAD_CHANNELS,
    CellOutput,
    TransferHead,
    param_groups,
)
from monai_isl.postprocessing import (
    STORED_PARAMS,
    HMaximaWatershedd,
    check_h,
    hmaxima_watershed,
    remove_relatively_small_instances,
    remove_small_instances,
    stored_watershed_params,
    typical_object_area,
)
from monai_isl.synthetic import touching_cells
from monai_isl.transforms import instance_distance


def _field(seed: int, size: int = 192) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Touching cells, a network-like distance map (smoothed target + smooth noise) and a soft mask."""
    labels = touching_cells(size, 32.0, seed=seed, drop=0.0)
    noise = ndi.gaussian_filter(np.random.default_rng([seed, 1]).standard_normal((size, size)), 2)
    distance = ndi.gaussian_filter(instance_distance(labels), 1.5) + noise / noise.std() * 8.0
    prob = ndi.gaussian_filter((labels > 0).astype(np.float64), 1.0)
    return labels, distance.astype(np.float32), prob.astype(np.float32)


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_auto_h_separates_touching_cells(scale: float) -> None:
    fit_labels, fit_dist, fit_prob = _field(0)
    result = fit_watershed_params([fit_dist * scale], [fit_prob], [fit_labels], sigmas=(0.0,), min_areas=(0.0,))
    labels, dist, prob = _field(1)
    dist = dist * scale

    def score(h: float) -> float:
        return mean_average_precision(labels, hmaxima_watershed(dist, prob, h=h))

    auto = score(result["h"])
    assert auto > score(0.0) + 0.2, (result["h"], auto, score(0.0))
    assert auto > score(1e4 * scale) + 0.2, (result["h"], auto)
    assert auto > 0.6
    assert 0 < result["h"] < result["scale"]  # on the prediction's own scale
    assert result["map"] == max(row[-1] for row in result["table"])


def test_scaled_prediction_gets_a_scaled_h_and_the_same_map() -> None:
    labels, dist, prob = _field(0)
    full = fit_watershed_params([dist], [prob], [labels], sigmas=(0.0,), h_grid=None)
    small = fit_watershed_params([dist * 0.1], [prob], [labels], sigmas=(0.0,))
    assert small["scale"] == pytest.approx(0.1 * full["scale"], rel=1e-4)
    assert small["map"] >= full["map"] - 0.02  # the relative part of the grid is the same at both scales


def test_target_reference_and_sigma_search() -> None:
    labels, dist, prob = _field(0)
    result = fit_watershed_params(
        [dist], [prob], [labels], sigmas=(0.0, 1.0), target_distances=[instance_distance(labels)]
    )
    assert result["target"]["map"] >= result["target"]["map_h10"]
    assert result["target"]["map"] > 0.9
    assert result["sigma"] in (0.0, 1.0)
    best0 = max(r[-1] for r in result["table"] if r[0] == 0.0)
    assert result["map"] >= best0  # a sigma > 0 is only taken when it helps


def _with_specks(seed: int, size: int = 192, n: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """:func:`_field` plus ``n`` specks on the background (discs of radius 1-3 px where the prediction has mask
    probability 0.9 and a distance bump), as a trained network leaves in noise; and the largest speck's area."""
    labels, dist, prob = _field(seed, size)
    rng = np.random.default_rng([seed, 2])
    yy, xx = np.mgrid[:size, :size]
    background = ndi.distance_transform_edt(labels == 0)
    largest, placed = 0, 0
    while placed < n:
        r, cy, cx = rng.integers(1, 4), rng.integers(4, size - 4), rng.integers(4, size - 4)
        if background[cy, cx] < r + 3:
            continue
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        prob[disc], dist[disc] = 0.9, 20.0
        largest, placed = max(largest, int(disc.sum())), placed + 1
    return labels, dist, prob, largest


def test_auto_min_area_drops_specks_and_keeps_cells() -> None:
    fit_labels, fit_dist, fit_prob, largest_speck = _with_specks(0)
    result = fit_watershed_params([fit_dist], [fit_prob], [fit_labels], sigmas=(0.0,))
    assert result["min_area"] == 0.0 and result["min_area_fraction"] > 0  # the default: relative to each field
    cell_areas = np.bincount(fit_labels.ravel())[1:]
    every_fit = hmaxima_watershed(fit_dist, fit_prob, h=result["h"])
    threshold = result["min_area_fraction"] * typical_object_area(every_fit)
    assert largest_speck <= threshold < np.median(cell_areas[cell_areas > 0])
    assert result["map"] > result["map_all_objects"] + 0.05  # on the fitted field
    labels, dist, prob, _ = _with_specks(1)
    every = hmaxima_watershed(dist, prob, h=result["h"])
    kept = remove_relatively_small_instances(every, result["min_area_fraction"])
    assert mean_average_precision(labels, kept) > mean_average_precision(labels, every) + 0.05  # another field
    # in pixels (a number given, or a grid): the same choice, as a pixel count
    pixels = fit_watershed_params([fit_dist], [fit_prob], [fit_labels], sigmas=(0.0,), min_areas=(0, 10, 40, 200))
    assert pixels["min_area_fraction"] is None and largest_speck <= pixels["min_area"] < np.median(cell_areas)
    # without specks nothing is gained by dropping objects: ties go to keeping every object
    clean_labels, clean_dist, clean_prob = _field(0)
    assert fit_watershed_params([clean_dist], [clean_prob], [clean_labels], sigmas=(0.0,))["min_area_fraction"] == 0
    held = fit_watershed_params([fit_dist], [fit_prob], [fit_labels], sigmas=(0.0,), min_areas=(0.0,))
    assert held["min_area"] == 0.0 and held["map"] == pytest.approx(result["map_all_objects"])
    with pytest.raises(ValueError, match="min_areas / min_area_fractions must be numbers >= 0"):
        fit_watershed_params([fit_dist], [fit_prob], [fit_labels], min_areas=(-1.0,))


def test_typical_object_area_is_the_area_weighted_median() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, rng.integers(2, 12), size=(rng.integers(1, 30), 17))
        per_pixel = np.bincount(labels.ravel())[labels[labels > 0]]  # each foreground pixel: its object's area
        expected = float(np.sort(per_pixel)[math.ceil(per_pixel.size / 2) - 1]) if per_pixel.size else 0.0
        assert typical_object_area(labels) == expected
    assert typical_object_area(np.zeros((3, 3), int)) == 0.0


def test_relative_min_area_scales_with_the_cells() -> None:
    """The same fraction keeps the same cells of a field shown at half the size; a pixel count does not."""
    labels = touching_cells(384, 32.0, seed=0, drop=0.0).astype(np.int64)
    background = np.argwhere(ndi.binary_erosion(labels == 0, iterations=4)[::4, ::4]) * 4
    for y, x in background[:: max(1, len(background) // 20)][:20]:
        labels[y : y + 4, x : x + 4] = labels.max() + 1  # 20 specks of 4 x 4 px where there is no cell
    small = labels[::2, ::2]  # every cell and speck at half the size (a quarter of the area)
    fraction = 0.3
    big_kept = remove_relatively_small_instances(labels, fraction)
    small_kept = remove_relatively_small_instances(small, fraction)
    cells = set(np.unique(labels[labels > 0]))
    kept_big = set(np.unique(labels[big_kept > 0]))
    kept_small = set(np.unique(small[small_kept > 0]))
    assert 0 < len(cells - kept_big) and kept_small == kept_big  # the specks go, at both sizes
    carried = remove_small_instances(small, fraction * typical_object_area(labels))  # the pixel count of the big field
    assert len(set(np.unique(small[carried > 0]))) < 0.5 * len(kept_big)
    with pytest.raises(ValueError, match="min_area_fraction must be a number >= 0"):
        remove_relatively_small_instances(labels, -0.1)


def test_model_fitted_before_min_area_keeps_every_object(tmp_path: Path) -> None:
    net = _tiny_cell_net(255.0)
    store_watershed_params(net, 40.0, 0.0, 300.0)
    old_state = {
        k: v
        for k, v in net.state_dict().items()
        if not k.endswith(("min_area", "min_area_fraction", "area_low", "area_high"))
    }
    rebuilt = _tiny_cell_net()
    rebuilt.load_state_dict(old_state, strict=True)  # a model.pt fitted before min_area existed
    assert stored_watershed_params(rebuilt) == {
        "h": 40.0,
        "sigma": 0.0,
        "min_area": 0.0,
        "min_area_fraction": None,
        "area_low": None,
        "area_high": None,
    }
    never_fitted = {
        k: v
        for k, v in _tiny_cell_net().state_dict().items()
        if not k.endswith(("min_area", "min_area_fraction", "area_low", "area_high"))
    }
    rebuilt.load_state_dict(never_fitted, strict=True)
    assert stored_watershed_params(rebuilt) == NOTHING_STORED
    auto = HMaximaWatershedd(keys="pred", h="auto", min_area="auto", params=rebuilt, fallback_h=7.0)
    assert auto.resolved() == (7.0, 0.0, 0.0)
    assert HMaximaWatershedd(keys="pred", h=5.0, min_area=12, params=rebuilt).resolved() == (5.0, 0.0, 12.0)


def test_h_is_validated() -> None:
    assert check_h("auto") == "auto" and check_h(" AUTO ") == "auto" and check_h("30") == 30.0 and check_h(0) == 0.0
    for bad in (-1.0, "ten", True, None, math.nan, math.inf, [10]):
        with pytest.raises(ValueError, match=r"^h must be a number >= 0 or 'auto'"):
            HMaximaWatershedd(keys="pred", h=bad, params=nn.Identity())
    with pytest.raises(ValueError, match="h='auto' needs params"):
        HMaximaWatershedd(keys="pred", h="auto")
    with pytest.raises(ValueError, match="'auto' is resolved by HMaximaWatershedd"):
        hmaxima_watershed(np.zeros((4, 4)), np.ones((4, 4)), h="auto")
    with pytest.raises(ValueError, match=r"^h must be"):
        hmaxima_watershed(np.zeros((4, 4)), np.ones((4, 4)), h=-2)


#: what a network or model.pt that was never fitted stores
NOTHING_STORED = {key: None for key in STORED_PARAMS}


def _tiny_cell_net(gain: float = 1.0) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 2, 1), nn.Identity(), CellOutput(gain))


def test_stored_h_round_trips_state_dict_model_pt_and_torchscript(tmp_path: Path) -> None:
    net = _tiny_cell_net(255.0)
    assert stored_watershed_params(net) == NOTHING_STORED
    store_watershed_params(net, 37.5, 1.0, 250.0, 0.25, (900.0, 1800.0))
    torch.save({"model": net.state_dict()}, tmp_path / "model.pt")
    rebuilt = _tiny_cell_net()
    rebuilt.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True)["model"])
    FITTED = {
        "h": 37.5,
        "sigma": 1.0,
        "min_area": 250.0,
        "min_area_fraction": 0.25,
        "area_low": 900.0,
        "area_high": 1800.0,
    }
    assert float(rebuilt[2].distance_gain) == 255.0
    assert stored_watershed_params(rebuilt) == FITTED
    assert stored_watershed_params(tmp_path / "model.pt") == FITTED
    scripted = torch.jit.script(rebuilt)
    assert stored_watershed_params(scripted) == FITTED
    scripted.save(str(tmp_path / "model.ts"))
    assert stored_watershed_params(str(tmp_path / "model.ts")) == FITTED
    x = torch.randn(1, 2, 8, 8)
    torch.testing.assert_close(scripted(x), rebuilt(x))


def test_auto_transform_uses_the_stored_values_read_at_call_time() -> None:
    labels, dist, prob = _field(0, size=96)
    logit = np.log(prob.clip(1e-4, 1 - 1e-4) / (1 - prob.clip(1e-4, 1 - 1e-4)))
    pred = torch.from_numpy(np.stack([dist, logit]))
    net = _tiny_cell_net()
    auto = HMaximaWatershedd(keys="pred", h="auto", sigma="auto", min_area="auto", params=net, sigmoid=True)
    with pytest.raises(ValueError, match="stores no fitted h"):
        auto({"pred": pred})
    assert HMaximaWatershedd(keys="pred", h="auto", params=net, fallback_h=7.0).resolved() == (7.0, 0.0, 0.0)
    store_watershed_params(net, 25.0, 1.0, 40.0)  # e.g. a checkpoint loaded into the network after the transform
    fixed = HMaximaWatershedd(keys="pred", h=25.0, sigma=1.0, min_area=40.0, sigmoid=True)
    assert auto.resolved() == (25.0, 1.0, 40.0)
    assert torch.equal(auto({"pred": pred})["pred_inst"], fixed({"pred": pred})["pred_inst"])


def test_legacy_state_dict_loads_as_identity_output() -> None:
    old = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Identity())
    net = _tiny_cell_net(255.0)
    net.load_state_dict(old.state_dict(), strict=True)  # no "2.*" keys: the model trained before CellOutput
    assert float(net[2].distance_gain) == 1.0 and stored_watershed_params(net)["h"] is None
    x = torch.randn(1, 2, 8, 8)
    torch.testing.assert_close(net(x), old(x))
    with pytest.raises(RuntimeError, match="Unexpected"):
        net.load_state_dict({**old.state_dict(), "2.bogus": torch.zeros(())}, strict=True)


def test_fit_network_watershed_stores_in_network_and_checkpoint(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Identity(), nn.Identity(), CellOutput(1.0))  # the "image" is already (distance, logit)
    items = []
    for seed in (0, 1):
        labels, dist, prob = _field(seed, size=128)
        logit = np.log(prob.clip(1e-4, 1 - 1e-4) / (1 - prob.clip(1e-4, 1 - 1e-4)))
        items.append({"image": torch.from_numpy(np.stack([dist, logit])), "instances": labels[None]})
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    result = fit_network_watershed(net, items, lambda d: d, lambda x, n: n(x), checkpoint=ckpt, sigmas=(0.0,))
    assert result["h"] > 0 and result["map"] > 0.5 and "target" in result
    assert stored_watershed_params(net)["h"] == pytest.approx(result["h"])
    assert stored_watershed_params(ckpt)["h"] == pytest.approx(result["h"])


def _tiny_cell_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A blurred, noisy 64x64 field of touching cells as a 1-channel "ISL output", its (distance, mask) target and
    the inside-cell pixels: a training case small enough for a unit test."""
    labels = touching_cells(64, 16.0, seed=0, drop=0.0)
    mask = (labels > 0).astype(np.float32)
    image = ndi.gaussian_filter(mask, 1) + 0.1 * np.random.default_rng(0).standard_normal(mask.shape)
    x = torch.from_numpy(image.astype(np.float32))[None, None]
    y = torch.from_numpy(np.stack([instance_distance(labels), mask]))[None]
    return x, y, y[0, 1] > 0


def _train(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` Adam steps of the paper's loss (MSE + 2000 * BCE); the output of the last forward pass."""
    loss_fn = CombinedLoss(2000.0)
    for _ in range(steps):
        out = net(x)
        loss = loss_fn(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return out


def test_distance_gain_and_head_lr_reach_the_distance_scale() -> None:
    """Measured on this input (target mean ~105 inside cells): after 30 steps the width-2 ISL head reaches 93 with
    gain 255 + head lr 1e-2, 3.4 with head lr 1e-2 alone, 0.43 at one lr 1e-3 (the old default); a 2-output
    body (the baseline) reaches 122 after 60 steps with gain 255 at lr 1e-3, 0.7 without it."""
    x, y, inside = _tiny_cell_problem()
    target_mean = float(y[0, 0][inside].mean())

    def trained_distance(isl: bool, gain: float, lr: float, head_lr: float | None, steps: int) -> float:
        torch.manual_seed(0)
        body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1 if isl else 2, 3, padding=1))
        net = nn.Sequential(body, TransferHead(1, 2, 2) if isl else nn.Identity(), CellOutput(gain))
        groups = param_groups(net, lr, head_lr) if head_lr else [{"params": net.parameters(), "lr": lr}]
        out = _train(net, torch.optim.Adam(groups), x, y, steps)
        return float(out[0, 0].detach()[inside].mean())

    old = trained_distance(True, 1.0, 1e-3, None, 30)
    assert trained_distance(True, 255.0, 1e-4, 1e-2, 30) > 0.5 * target_mean
    assert old < 0.05 * target_mean
    assert trained_distance(True, 1.0, 1e-4, 1e-2, 30) > 2 * old  # the head's own lr helps without a gain too
    assert trained_distance(False, 255.0, 1e-3, None, 60) > 0.5 * target_mean
    assert trained_distance(False, 1.0, 1e-3, None, 60) < 0.05 * target_mean


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_isl_head_learns_distance_and_mask(seed: int) -> None:
    """The default ISL head (width 8, gain 255, head lr 1e-2 / network 1e-4) on a 1-channel "ISL output": after 30
    steps the distance inside cells is on the target's scale and the mask matches the labels (measured: distance
    98-121 of a 105 target mean, mask IoU 0.94-0.96; the paper's width 2 with the gain: IoU 0.81-0.92)."""
    x, y, inside = _tiny_cell_problem()
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
    net = nn.Sequential(body, TransferHead(1, 2, DEFAULT_HEAD_CHANNELS), CellOutput(DEFAULT_DISTANCE_GAIN))
    out = _train(net, torch.optim.Adam(param_groups(net, 1e-4, 1e-2)), x, y, 30)
    distance, predicted = out[0, 0].detach(), out[0, 1].detach() > 0
    assert float(distance[inside].mean()) > 0.7 * float(y[0, 0][inside].mean())
    assert float((predicted & inside).sum() / (predicted | inside).sum()) > 0.9
