"""Helpers that give per-image CSV rows a readable name."""

from __future__ import annotations

from typing import Any


def image_names(batch: Any) -> list[dict[str, str]]:
    """``MetricsSaver`` batch transform: one ``{"filename_or_obj": name}`` per image of an engine batch.

    Works on a decollated batch (a list of items, MONAI's default) and on a collated one (a dict of lists).
    """
    if isinstance(batch, dict):
        names = batch.get("name", [])
        names = names if isinstance(names, (list, tuple)) else [names]
    else:
        names = [item.get("name", "?") if isinstance(item, dict) else "?" for item in batch]
    return [{"filename_or_obj": str(n)} for n in names]
