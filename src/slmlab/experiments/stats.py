"""Paired statistics for multi-seed comparisons (variant vs baseline, matched by seed).

For seeds i with both runs finished, d_i = 100 (ppl_variant,i / ppl_baseline,i - 1), the per-seed
change in percent. Reported: mean and sample std of each variant's perplexity, Δ% of the means,
seed wins (d_i < 0), a 95% confidence interval of mean(d) from the t distribution with n - 1
degrees of freedom, the paired t-test p-value (two-sided) and the exact sign-test p-value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass
class Comparison:
    n_pairs: int
    delta_pct: float  # of the means
    wins: int
    ci_low: float  # 95% CI of the mean paired Δ%
    ci_high: float
    t_p: float
    sign_p: float

    def to_dict(self) -> dict:
        return asdict(self)


def paired_comparison(variant: dict[int, float], baseline: dict[int, float]) -> Comparison:
    """variant/baseline: seed -> perplexity (finite values only)."""
    seeds = sorted(set(variant) & set(baseline))
    v = np.array([variant[s] for s in seeds], dtype=np.float64)
    b = np.array([baseline[s] for s in seeds], dtype=np.float64)
    n = len(seeds)
    delta = (
        100.0 * (np.mean(list(variant.values())) / np.mean(list(baseline.values())) - 1.0) if variant and baseline else math.nan
    )
    if n == 0:
        return Comparison(0, delta, 0, math.nan, math.nan, math.nan, math.nan)
    d = 100.0 * (v / b - 1.0)
    wins = int(np.sum(d < 0))
    if n >= 2 and np.std(d, ddof=1) > 0:
        half = stats.t.ppf(0.975, n - 1) * np.std(d, ddof=1) / math.sqrt(n)
        ci = (float(d.mean() - half), float(d.mean() + half))
        t_p = float(stats.ttest_1samp(d, 0.0).pvalue)
    else:
        ci, t_p = (float(d.mean()), float(d.mean())) if n >= 2 else (math.nan, math.nan), math.nan
    decided = int(np.sum(d != 0))
    sign_p = float(stats.binomtest(wins, decided, 0.5).pvalue) if decided else 1.0
    return Comparison(n, float(delta), wins, ci[0], ci[1], t_p, sign_p)


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0
