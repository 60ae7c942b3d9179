"""Per-set summaries of a per-case metric: mean ± sd, median, and a 95 % bootstrap interval
of the mean. The bootstrap uses a fixed seed so a report is reproducible to the digit.

Undefined values (NaN: HD95 when exactly one mask is empty) are left out and counted in
``n_undefined``; infinities are never produced by ``metrics``.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


def summarize(values: Iterable[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED, confidence: float = 0.95) -> dict:
    """Summary of the finite values; sd is the sample standard deviation (ddof=1, 0 for one value).

    The interval is the percentile bootstrap of the mean (resampling cases with replacement);
    with fewer than two values it collapses to the mean."""
    array = np.asarray(list(values), dtype=float)
    defined = array[np.isfinite(array)]
    summary = {"n": int(defined.size), "n_undefined": int(array.size - defined.size)}
    if defined.size == 0:
        return {**summary, "mean": math.nan, "sd": math.nan, "median": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    mean = float(defined.mean())
    sd = float(defined.std(ddof=1)) if defined.size > 1 else 0.0
    if defined.size > 1:
        rng = np.random.default_rng(seed)
        resampled_means = defined[rng.integers(0, defined.size, size=(samples, defined.size))].mean(axis=1)
        tail = (1.0 - confidence) / 2.0 * 100.0
        ci_low, ci_high = (float(v) for v in np.percentile(resampled_means, [tail, 100.0 - tail]))
    else:
        ci_low = ci_high = mean
    return {**summary, "mean": mean, "sd": sd, "median": float(np.median(defined)), "ci_low": ci_low, "ci_high": ci_high}

