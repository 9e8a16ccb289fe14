"""Cell size at inference: a field whose cells are smaller or larger than the training fields' is resampled to the
trained size, predicted there, and the prediction resampled back (not in the paper).

A network trained on 24 Usiigaci fields scores mAP 0.33-0.34 on six never-tuned fields as imaged, but 0.13-0.17
on the same fields resampled to 0.67 x their size and 0.20-0.26 at 1.5 x (AP@0.5 0.31-0.57): the network itself
fails outside the cell sizes it was trained on, with or without zoom augmentation and a relative minimum area
(``docs/results/real_cell_generalisation/``). With this, 1.5 x: 0.32-0.33; 0.67 x: 0.20 (the first pass merges
small cells, so few such fields look small). The issue's unseen fields (mAP 0.121, AP@0.5 0.345) resemble the
0.67 x case.
Cellpose meets this by rescaling each image to its training diameter; this does the same without a size model:

1. after training, :func:`monai_isl.instance_fit.fit_network_watershed` stores the range of cell sizes the network
   segments (the quartiles of :func:`~monai_isl.postprocessing.typical_object_area` over the fit fields, in
   pixels) as ``watershed_area_low`` / ``watershed_area_high`` in the network's ``CellOutput``;
2. :class:`ObjectScaleInferer` predicts a field as it is, segments it with the stored h / min_area, and if the
   field's typical object lies outside that range, resamples the field by ``sqrt(nearest bound / typical)`` (at
   least :data:`MIN_ZOOM`, at most :data:`MAX_ZOOM` either way; nothing below it), predicts again and resamples
   the output back to the field's grid, where the post-processing runs as before.

Fields inside the range (all of the training fields' kind) are predicted once, exactly as without it. A model
fitted before this existed stores no range and is never resampled.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .postprocessing import fitted_instances, stored_watershed_params, typical_object_area

__all__ = ["MAX_ZOOM", "MIN_ZOOM", "ObjectScaleInferer", "rescale_factor"]

logger = logging.getLogger(__name__)

#: the largest linear resampling either way (x1/3 .. x3): beyond it the estimate from the first pass is unreliable
MAX_ZOOM = 3.0
#: the smallest linear resampling done (x1.25 or x0.8): the training's zoom augmentation (x0.75-1.33) showed the
#: network such sizes already, and a field just outside the quartiles of the fit fields is one of their kind
MIN_ZOOM = 1.25


def rescale_factor(
    typical_area: float, low: float, high: float, max_zoom: float = MAX_ZOOM, min_zoom: float = MIN_ZOOM
) -> float:
    """The linear zoom that brings a field's typical object area into ``[low, high]``, clipped to
    ``[1 / max_zoom, max_zoom]``; 1 inside the range, without a range or objects, or for a zoom within
    ``[1 / min_zoom, min_zoom]``."""
    if not (typical_area > 0 and 0 < low <= high) or low <= typical_area <= high:
        return 1.0
    target = low if typical_area < low else high
    factor = float(np.clip(math.sqrt(target / typical_area), 1.0 / max_zoom, max_zoom))
    return factor if max(factor, 1.0 / factor) >= min_zoom else 1.0


class ObjectScaleInferer:
    """``inferer`` (e.g. the sliding window), with fields of out-of-range cell size resampled to the trained size.

    Args:
        inferer: called as ``inferer(inputs, network)``; gives ``(B, 2, H, W)`` (distance, mask logit).
        enabled: False: ``inferer`` itself (``rescale_cells: false`` in the bundles).
        mask_threshold: the mask probability of the first pass's segmentation (as the post-processing's).
        max_zoom, min_zoom: see :data:`MAX_ZOOM`, :data:`MIN_ZOOM`.

    ``last_factors`` holds the zoom used for each field of the last call (1: not resampled).
    """

    def __init__(
        self, inferer: Callable[..., torch.Tensor], enabled: bool = True, mask_threshold: float = 0.5,
        max_zoom: float = MAX_ZOOM, min_zoom: float = MIN_ZOOM,
    ) -> None:  # fmt: skip
        self.inferer = inferer
        self.enabled = bool(enabled)
        self.mask_threshold = float(mask_threshold)
        self.max_zoom = float(max_zoom)
        self.min_zoom = float(min_zoom)
        self.last_factors: list[float] = []

    @property
    def precision(self) -> Any:
        """The wrapped inferer's compute precision (``monai_isl.precision``): both passes run in it."""
        return getattr(self.inferer, "precision", None)

    def _factor(self, output: torch.Tensor, params: dict[str, float | None]) -> float:
        pred = output.detach().float().cpu().numpy()
        prob = 1.0 / (1.0 + np.exp(-pred[1].astype(np.float64)))
        labels = fitted_instances(
            pred[0], prob, float(params["h"]), params["sigma"] or 0.0, params["min_area"] or 0.0,
            params["min_area_fraction"] or 0.0, self.mask_threshold,
        )  # fmt: skip
        area = typical_object_area(labels)
        return rescale_factor(area, params["area_low"], params["area_high"], self.max_zoom, self.min_zoom)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        output = self.inferer(inputs, network, *args, **kwargs)
        self.last_factors = [1.0] * int(inputs.shape[0])
        params = stored_watershed_params(getattr(network, "module", network)) if self.enabled else {}
        if not self.enabled or None in (params.get("h"), params.get("area_low"), params.get("area_high")):
            return output
        fields = [torch.as_tensor(o) for o in output.unbind(0)]
        for b in range(int(inputs.shape[0])):
            factor = self._factor(fields[b], params)
            if factor == 1.0:
                continue
            size = tuple(inputs.shape[-2:])
            zoomed_size = [max(1, round(s * factor)) for s in size]
            image = torch.as_tensor(inputs[b : b + 1]).float()
            image = F.interpolate(image, size=zoomed_size, mode="bilinear", antialias=factor < 1)
            zoomed = torch.as_tensor(self.inferer(image, network, *args, **kwargs)).float()
            back = F.interpolate(zoomed, size=size, mode="bilinear", antialias=factor > 1)
            fields[b] = back[0].to(fields[b].dtype)
            self.last_factors[b] = factor
            logger.info(
                "cell size: typical object outside the trained range (%.0f-%.0f px): field resampled x%.2f, "
                "predicted, and resampled back",
                params["area_low"],
                params["area_high"],
                factor,
            )
        if all(f == 1.0 for f in self.last_factors):
            return output
        return torch.stack(fields)
