"""Statistics of the world experiments: means with bootstrap 95% intervals over clips, and paired differences.

Every experiment scores the same held-out clips under every variant with the same seeds, so a variant's effect is a
*paired* difference: per clip, the metric with the operation minus the metric without it; its interval comes from
resampling clips (percentile bootstrap, :data:`RESAMPLES` draws, seeded so a report is reproducible). NaN values
(a metric that has nothing to measure on a clip, e.g. no hair pixels) are left out of that metric only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean over clips with its bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def text(self, digits: int = 3) -> str:
        if math.isnan(self.mean):
            return "n/a"
        if math.isnan(self.low) or math.isnan(self.high):  # a single number (a pooled loss, a ratio of means)
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap(values: Sequence[float], *, seed: int = 0, resamples: int = RESAMPLES, level: float = LEVEL) -> Estimate:
    """Mean of ``values`` (NaNs left out) with a percentile-bootstrap interval; one value gives a zero-width one."""
    x = torch.tensor([v for v in values if v is not None and not math.isnan(v)], dtype=torch.float64)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Estimate(mean, mean, mean, 1)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (resamples, n), generator=gen)
    means = x[idx].mean(dim=1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return Estimate(mean, low, high, n)


def paired_difference(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> Estimate:
    """Mean of ``a[i] - b[i]`` over clips where both are numbers, with its bootstrap interval."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same clips: got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b) if not (math.isnan(x) or math.isnan(y))]
    return bootstrap(diffs, seed=seed)


def summarise(rows: Mapping[str, Sequence[Mapping[str, float]]], *, seed: int = 0) -> dict[str, dict[str, dict]]:
    """``rows[variant]`` = one dict of metrics per clip -> ``{variant: {metric: Estimate.as_dict()}}``."""
    out: dict[str, dict[str, dict]] = {}
    for variant, clips in rows.items():
        keys = sorted({k for c in clips for k, v in c.items() if isinstance(v, (int, float))})
        out[variant] = {k: bootstrap([float(c.get(k, math.nan)) for c in clips], seed=seed).as_dict() for k in keys}
    return out


def effects(rows: Mapping[str, Sequence[Mapping[str, float]]], pairs: Mapping[str, tuple[str, str]],
            metrics: Sequence[str], *, seed: int = 0) -> dict[str, dict[str, dict]]:
    """Paired effects: ``pairs[name] = (with, without)`` variants -> ``{name: {metric: difference estimate}}``
    (variants missing from ``rows`` are skipped)."""
    out: dict[str, dict[str, dict]] = {}
    for name, (with_, without) in pairs.items():
        if with_ not in rows or without not in rows:
            continue
        out[name] = {m: paired_difference([float(c.get(m, math.nan)) for c in rows[with_]],
                                          [float(c.get(m, math.nan)) for c in rows[without]], seed=seed).as_dict()
                     for m in metrics}
    return out


def cell(estimate: Mapping[str, float] | None, digits: int = 3) -> str:
    """A summarised metric (``Estimate.as_dict()``) as ``mean [low, high]`` for a table."""
    if not estimate:
        return "n/a"
    return Estimate(estimate["mean"], estimate["low"], estimate["high"], int(estimate["n"])).text(digits)


def table(summary: Mapping[str, Mapping[str, Mapping[str, float]]], metrics: Sequence[str], first: str = "",
          labels: Mapping[str, str] | None = None) -> str:
    """Markdown table: one row per variant, one column per metric, ``mean [95% interval]`` cells."""
    labels = labels or {}
    lines = ["| " + " | ".join([first, *(labels.get(m, m) for m in metrics)]) + " |",
             "|" + "---|" * (len(metrics) + 1)]
    for variant, metric_values in summary.items():
        lines.append("| " + " | ".join([variant, *(cell(metric_values.get(m)) for m in metrics)]) + " |")
    return "\n".join(lines)
