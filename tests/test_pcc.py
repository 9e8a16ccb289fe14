"""Pearson correlation: function, MONAI metric and Ignite handler against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from scipy.stats import pearsonr

from monai_isl.handlers import PearsonCorrelation
from monai_isl.metrics import PearsonCorrelationMetric, pearson_correlation


def test_pcc_matches_scipy_and_is_scale_invariant() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((1, 64, 64))
    b = 0.7 * a + 0.3 * rng.random((1, 64, 64))
    expected = pearsonr(a.ravel(), b.ravel()).statistic
    assert pearson_correlation(a, b) == pytest.approx(expected, abs=1e-12)
    assert pearson_correlation(torch.tensor(a * 1000 + 5), torch.tensor(b)) == pytest.approx(expected, abs=1e-12)
    assert pearson_correlation(a, -b) == pytest.approx(-expected, abs=1e-12)
    assert np.isnan(pearson_correlation(np.ones((4, 4)), a[0, :4, :4]))
    with pytest.raises(ValueError, match="same number of pixels"):
        pearson_correlation(np.ones((4, 4)), np.ones((4, 5)))


def test_metric_is_per_image_over_the_whole_field_then_mean() -> None:
    rng = np.random.default_rng(1)
    preds = torch.tensor(rng.random((3, 1, 32, 32)))
    targets = preds + torch.tensor(rng.random((3, 1, 32, 32))) * torch.tensor([0.1, 1.0, 3.0]).view(3, 1, 1, 1)
    metric = PearsonCorrelationMetric()
    metric(y_pred=preds[:2], y=targets[:2])
    metric(y_pred=preds[2:], y=targets[2:])
    per_image = [pearsonr(p.ravel().numpy(), t.ravel().numpy()).statistic for p, t in zip(preds, targets)]
    np.testing.assert_allclose(metric.get_buffer().squeeze(1).numpy(), per_image, atol=1e-12)
    assert float(metric.aggregate()) == pytest.approx(np.mean(per_image), abs=1e-6)  # MONAI reduces in float32
    with pytest.raises(ValueError, match="same shape"):
        metric(y_pred=preds, y=targets[:, :, :16])


def test_constant_image_is_left_out_of_the_mean() -> None:
    metric = PearsonCorrelationMetric()
    good = torch.arange(16.0).view(1, 1, 4, 4)
    metric(y_pred=torch.cat([good, torch.ones_like(good)]), y=torch.cat([good, good]))
    assert float(metric.aggregate()) == pytest.approx(1.0)


def test_ignite_handler_in_an_engine() -> None:
    rng = np.random.default_rng(2)
    batches = [
        {"pred": torch.tensor(rng.random((1, 1, 16, 16))), "label": torch.tensor(rng.random((1, 1, 16, 16)))}
        for _ in range(3)
    ]

    def step(engine: Engine, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["pred"], batch["label"]

    engine = Engine(step)
    PearsonCorrelation(output_transform=lambda out: out).attach(engine, "pcc")
    state = engine.run(batches)
    expected = np.mean([pearsonr(b["pred"].ravel(), b["label"].ravel()).statistic for b in batches])
    assert state.metrics["pcc"] == pytest.approx(expected, abs=1e-9)
    assert len(state.metric_details["pcc"]) == 3
