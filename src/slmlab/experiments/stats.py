"""Paired statistics for multi-seed comparisons (variant vs baseline, matched by seed).

For seeds i with both runs finished, d_i = 100 (ppl_variant,i / ppl_baseline,i - 1), the per-seed
change in percent. Reported: mean and sample std of each variant's perplexity, Δ% of the means
over the paired seeds (a seed one side lacks, a failed run, would weigh its luck into one mean only),
seed wins (d_i < 0), a 95% confidence interval of mean(d) from the t distribution with n - 1
degrees of freedom, the paired t-test p-value (two-sided) and the exact sign-test p-value.
When every seed moves by the same amount (sample sd of d = 0) the t statistic is undefined and p is
NaN, not scipy's 0: zero spread over a few seeds is no evidence; the sign test and the interval (of
width 0) still report. A diverged run's perplexity can pass float64's range (inf): its seed's d is
+inf (-100% for a diverged baseline run), which the sign test counts as a loss (a win); the
interval and t-test of such a d are not numbers anyone measured, so they are NaN rather than the
figures of a capped value.
With several variants, the t-test p-values are Holm–Bonferroni adjusted as one family; and from
the seed-to-seed spread of d, the seeds a paired t-test needs to detect a given effect at 80% power.
Figures with no t distribution (a ratio of two changes, a share of prompts) get seeded bootstrap
percentile intervals: an ablation summary's over the validation batches, persona adherence over
prompts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass
class Comparison:
    n_pairs: int
    delta_pct: float  # of the means over the paired seeds
    wins: int
    ci_low: float  # 95% CI of the mean paired Δ%
    ci_high: float
    t_p: float
    sign_p: float
    sd: float = math.nan  # sample std of the per-seed Δ% (what the power line needs)

    def to_dict(self) -> dict:
        return asdict(self)


def _by_seed(*results) -> None:
    """Refuse results that are not {seed: value} (a list would be paired by position in silence,
    or fail inside numpy)."""
    if not all(isinstance(r, dict) for r in results):
        kinds = ", ".join(type(r).__name__ for r in results)
        raise ValueError(f"paired statistics take {{seed: value}} dicts, paired by seed; got {kinds}")


def paired_comparison(variant: dict[int, float], baseline: dict[int, float]) -> Comparison:
    """variant/baseline: seed -> perplexity, inf for a run whose perplexity overflowed float64
    (diverged): its Δ is +inf (-100% where the baseline's run diverged), a loss (a win) in the
    sign test, and the interval and t-test are NaN."""
    _by_seed(variant, baseline)
    seeds = sorted(set(variant) & set(baseline))
    v = np.array([variant[s] for s in seeds], dtype=np.float64)
    b = np.array([baseline[s] for s in seeds], dtype=np.float64)
    n = len(seeds)
    with np.errstate(invalid="ignore"):  # inf / inf: both runs of a seed diverged, a Δ nobody measured (NaN)
        delta = 100.0 * (v.mean() / b.mean() - 1.0) if n else math.nan
        d = 100.0 * (v / b - 1.0)
    if n == 0:
        return Comparison(0, float(delta), 0, math.nan, math.nan, math.nan, math.nan)
    wins = int(np.sum(d < 0))
    measured = np.isfinite(v).all() and np.isfinite(b).all()  # vs a diverged baseline, d = -100% is no measurement either
    spread = sample_spread(d) if n >= 2 and measured else math.nan
    if spread > 0:
        ci, t_p = t_interval(d), t_test_p(d)
    else:  # one seed, a perplexity that is not finite, or every seed's Δ the same: no t-test
        ci, t_p = (float(d.mean()), float(d.mean())) if spread == 0 else (math.nan, math.nan), math.nan
    decided = int(np.sum((d != 0) & ~np.isnan(d)))  # an infinite Δ is decided; inf / inf is not
    sign_p = float(stats.binomtest(wins, decided, 0.5).pvalue) if decided else 1.0
    return Comparison(n, float(delta), wins, ci[0], ci[1], t_p, sign_p, spread)


def mean_std(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (ddof 1: NaN for a single value, whose spread
    is unknown, not 0, and for values that include an infinity)."""
    if not values:
        return math.nan, math.nan
    array = np.asarray(values, dtype=np.float64)
    spread = len(array) > 1 and np.isfinite(array).all()  # an inf (an overflowed perplexity) has no spread
    return float(array.mean()), float(array.std(ddof=1)) if spread else math.nan


def holm_adjusted(p_values: dict[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values for m comparisons with one baseline: sorted ascending,
    p_adj(i) = max over j <= i of min(1, (m - j + 1) p(j)) (NaN p-values are left out and stay NaN).
    Controls the family-wise error rate at the level the adjusted p is compared with."""
    finite = sorted((p, name) for name, p in p_values.items() if math.isfinite(p))
    m, running, adjusted = len(finite), 0.0, {name: math.nan for name in p_values}
    for rank, (p, name) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[name] = running
    return adjusted


def paired_t_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test with n pairs to detect a mean difference `effect`
    when the differences have standard deviation `sd` (noncentral t, df = n - 1)."""
    if n < 2 or not sd > 0:
        return math.nan
    df, noncentrality = n - 1, abs(effect) / (sd / math.sqrt(n))
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality))


def seeds_needed(effect: float, sd: float, power: float = 0.8, alpha: float = 0.05, limit: int = 10_000) -> float:
    """The fewest seeds (pairs) whose paired t-test detects `effect` with `power`; inf beyond `limit`."""
    if not (math.isfinite(effect) and effect != 0 and math.isfinite(sd) and sd > 0):
        return math.nan
    n = 2
    while paired_t_power(effect, sd, n, alpha) < power:
        n *= 2
        if n > limit:
            return math.inf
    low, high = n // 2, n  # the power grows with n: bisect between the last two tries
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if paired_t_power(effect, sd, middle, alpha) < power else (low, middle)
    return float(max(2, high))


def paired_difference(variant: dict[int, float], baseline: dict[int, float]) -> tuple[float, float, float]:
    """(mean, 95% CI low, high) of variant - baseline over the seeds both have, from the t
    distribution (an effect in the metric's own units, e.g. bits per byte); NaN below 2 pairs."""
    _by_seed(variant, baseline)
    seeds = sorted(set(variant) & set(baseline))
    d = np.array([variant[s] - baseline[s] for s in seeds], dtype=np.float64)
    if len(d) < 2:
        return (float(d.mean()) if len(d) else math.nan), math.nan, math.nan
    return float(d.mean()), *t_interval(d)


def t_interval(d) -> tuple[float, float]:
    """The 95% confidence interval of mean(d) over n values (an array or sequence of paired
    differences, or samples): mean ± t_0.975(n - 1) · s / sqrt(n), s the sample standard
    deviation; NaN below 2 values."""
    d = np.asarray(d, dtype=np.float64)
    if len(d) < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.975, len(d) - 1) * np.std(d, ddof=1) / math.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def ratio_interval(totals, counts) -> tuple[float, float]:
    """The 95% confidence interval of R = sum(totals) / sum(counts), a mean over units of unequal
    size (the summed loss of each window and the tokens it scores), by the ratio estimator's
    linearisation: R ± t_0.975(k - 1) · sqrt(sum((y_i - R n_i)^2) / (k (k - 1))) / mean(n) over k
    units; with equal counts it is t_interval of the units' means. NaN below 2 units."""
    y, n = np.asarray(totals, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    if len(y) < 2:
        return math.nan, math.nan
    ratio = y.sum() / n.sum()
    residual = y - ratio * n
    half = stats.t.ppf(0.975, len(y) - 1) * math.sqrt((residual**2).sum() / (len(y) * (len(y) - 1))) / n.mean()
    return float(ratio - half), float(ratio + half)


def sample_spread(d: np.ndarray) -> float:
    """The sample standard deviation (ddof 1) of d (finite values), 0.0 where they differ by no more
    than float rounding (1e-12 of their size): 20.000000000000004 beside 20.0 is one change measured
    twice, and a t-test on the rounding would call it certain."""
    if np.ptp(d) <= 1e-12 * np.abs(d).max():
        return 0.0
    return float(np.std(d, ddof=1))


def t_test_p(d) -> float:
    """The two-sided one-sample t-test's p-value of mean(d) = 0 (paired differences); NaN below 2
    values, for a value that is not finite, and where every difference is the same (no spread:
    the t statistic is undefined, not infinitely significant)."""
    d = np.asarray(d, dtype=np.float64)
    if len(d) < 2 or not np.isfinite(d).all() or sample_spread(d) == 0:
        return math.nan
    return float(stats.ttest_1samp(d, 0.0).pvalue)


PERCENT_CHANGE = ("delta_pct", "delta_pct_low", "delta_pct_high")  # perplexity_change's figures


def perplexity_change(change: float, batches: list[float], reference: list[float]) -> dict[str, float]:
    """A model's perplexity against a reference's on the same validation batches: Δ% = 100 (exp(Δ)
    − 1) for `change` Δ, the change in mean loss, with its 95% CI 100 (exp(Δ ± h) − 1), h the t
    interval's half width of the batches' paired loss differences (`batches` − `reference`, each
    a batch's mean loss), and the paired t-test's p of those differences -> {"delta_pct",
    "delta_pct_low", "delta_pct_high", "p"}; NaN bounds and p below two batches, and for a loss
    that is not finite."""
    mean, low, high = paired_difference(dict(enumerate(batches)), dict(enumerate(reference)))
    half = mean - low if math.isfinite(low) and math.isfinite(high) else math.nan
    with np.errstate(over="ignore", invalid="ignore"):
        bounds = 100.0 * np.expm1(np.array([change, change - half, change + half], dtype=np.float64))
    p = t_test_p(np.subtract(batches, reference)) if len(batches) == len(reference) else math.nan
    return {**dict(zip(PERCENT_CHANGE, (float(b) for b in bounds))), "p": p}


def interval_clause(row: dict, batches: int) -> str:
    """A perplexity_change's interval as a sentence gives it, from `batches` paired batches: "95% CI
    [+0.12, +0.40]", or why there is none ("no CI from 1 batch", "no CI: a loss is not finite")."""
    shown = percent_interval(row)
    if shown != "–":
        return f"95% CI {shown}"
    return "no CI from 1 batch" if batches < 2 else "no CI: a loss is not finite"


def percent_interval(row: dict) -> str:
    """A row's perplexity_change interval as a table shows it, "[+0.12, +0.40]"; "–" where it has none
    (NaN bounds, or null where the row was read back from JSON)."""
    low, high = (row.get(key) for key in ("delta_pct_low", "delta_pct_high"))
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    return f"[{low:+.2f}, {high:+.2f}]"


def bootstrap_intervals(
    statistic: Callable[[np.ndarray], dict[str, float]], n: int, draws: int = 2000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of the figures `statistic(indices)` returns ({name: value}, read
    from the n items at `indices`: the validation batches of a paired comparison, so every side
    is resampled alike), over `draws` resamples of n indices with replacement (numpy's generator,
    seeded: the same figures every time). A figure is left out where some draw gives it no finite
    value; none where n < 2."""
    if n < 2:
        return {}
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    for _ in range(draws):
        for name, value in statistic(rng.integers(0, n, n)).items():
            values.setdefault(name, []).append(value)
    return {
        name: (float(np.percentile(drawn, 2.5)), float(np.percentile(drawn, 97.5)))
        for name, drawn in values.items()
        if len(drawn) == draws and np.isfinite(drawn).all()
    }


def bootstrap_mean(values: np.ndarray, seed: int, resamples: int = 2000) -> tuple[float, float, float]:
    """(mean, 2.5th, 97.5th percentile of resampled means): bootstrap_intervals' figures for a
    mean, drawn at once (the same draws for the same seed)."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def bootstrap_difference(a: np.ndarray, b: np.ndarray, seed: int, resamples: int = 2000) -> tuple[float, float, float]:
    """(mean(a) − mean(b), its 2.5th and 97.5th percentiles) with a and b resampled apart: two
    independent samples (persona-eval's neutral and adversarial prompts), not paired ones."""
    rng = np.random.default_rng(seed)
    diffs = a[rng.integers(0, len(a), (resamples, len(a)))].mean(axis=1) - b[rng.integers(0, len(b), (resamples, len(b)))].mean(
        axis=1
    )
    return float(a.mean() - b.mean()), float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))
