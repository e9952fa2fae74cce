"""Spread over seeds (or samples): mean ± sample standard deviation, and how the reports print it."""

from __future__ import annotations

import statistics


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None with fewer than two values)."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def format_mean_std(values: list[float], scale: float = 100.0) -> str:
    """`81.2 ± 1.3` (scaled to points), `81.2` for one value, `–` for none."""
    mean, std = mean_std(values)
    if mean is None:
        return "–"
    return f"{mean * scale:.1f}" + (f" ± {std * scale:.1f}" if std is not None else "")
