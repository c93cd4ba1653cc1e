"""Multiple comparisons and power: Holm–Bonferroni adjusted p-values against a worked example,
and the paired t-test's power against a scipy Monte Carlo of the same test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from slmlab.experiments.stats import holm_adjusted, paired_comparison, paired_t_power, seeds_needed, t_interval, t_test_p


def test_holm_adjustment_on_known_p_values():
    # sorted 0.01, 0.02, 0.03, 0.04 with m = 4: 4 x 0.01, 3 x 0.02, max(prev, 2 x 0.03), max(prev, 1 x 0.04)
    adjusted = holm_adjusted({"a": 0.03, "b": 0.01, "c": 0.04, "d": 0.02, "skip": math.nan})
    assert adjusted["b"] == pytest.approx(0.04) and adjusted["d"] == pytest.approx(0.06)
    assert adjusted["a"] == pytest.approx(0.06) and adjusted["c"] == pytest.approx(0.06)
    assert math.isnan(adjusted["skip"])
    assert holm_adjusted({"x": 0.4, "y": 0.5}) == {"x": pytest.approx(0.8), "y": pytest.approx(0.8)}
    assert holm_adjusted({"only": 0.03}) == {"only": pytest.approx(0.03)}  # one comparison: unchanged


@pytest.mark.parametrize("n, effect, sd", [(5, 2.0, 1.5), (8, 1.0, 1.2), (3, 3.0, 1.0)])
def test_power_matches_a_monte_carlo_of_the_t_test(n, effect, sd):
    rng = np.random.default_rng(0)
    samples = rng.normal(effect, sd, size=(20000, n))
    simulated = float(np.mean(stats.ttest_1samp(samples, 0.0, axis=1).pvalue < 0.05))
    assert paired_t_power(effect, sd, n) == pytest.approx(simulated, abs=0.015)


def test_seeds_needed_is_the_smallest_n_with_80_percent_power():
    n = seeds_needed(1.0, 1.5)
    assert paired_t_power(1.0, 1.5, int(n)) >= 0.8 > paired_t_power(1.0, 1.5, int(n) - 1)
    assert seeds_needed(0.0, 1.0) != seeds_needed(0.0, 1.0)  # no effect: NaN
    assert seeds_needed(1e-6, 10.0) == math.inf


def test_a_comparison_reports_the_spread_of_its_paired_differences():
    variant, baseline = {0: 9.0, 1: 9.5, 2: 8.8}, {0: 10.0, 1: 10.0, 2: 10.0}
    comparison = paired_comparison(variant, baseline)
    d = np.array([-10.0, -5.0, -12.0])
    assert comparison.sd == pytest.approx(float(np.std(d, ddof=1)))
    assert comparison.t_p == pytest.approx(float(stats.ttest_1samp(d, 0.0).pvalue))
    interval = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert (comparison.ci_low, comparison.ci_high) == pytest.approx(interval)


def test_the_bpb_effect_and_its_interval():
    from slmlab.experiments.stats import paired_difference

    variant, baseline = {0: 1.50, 1: 1.48, 2: 1.52}, {0: 1.55, 1: 1.50, 2: 1.56}
    mean, low, high = paired_difference(variant, baseline)
    d = np.array([-0.05, -0.02, -0.04])
    interval = stats.t.interval(0.95, 2, loc=d.mean(), scale=stats.sem(d))
    assert mean == pytest.approx(d.mean()) and (low, high) == pytest.approx(interval)
    assert math.isnan(paired_difference({0: 1.0}, {0: 1.1})[1])


def test_results_not_keyed_by_seed_are_refused_not_paired_by_position():
    """paired_comparison([9.0, 9.5], [10.0, 10.0]) failed inside numpy ('list indices must be
    integers'); pairing lists by position could pair different seeds in silence."""
    from slmlab.experiments.stats import paired_difference

    for compare in (paired_comparison, paired_difference):
        with pytest.raises(ValueError, match="take \\{seed: value\\} dicts, paired by seed; got list, dict"):
            compare([9.0, 9.5], {0: 10.0, 1: 10.0})


@pytest.mark.parametrize("values", [[0.3, -0.1, 0.5, 0.2], (1.0, 2.0), np.array([2.5, 2.5, 2.5])])
def test_the_t_interval_of_a_list_tuple_or_array_is_scipys(values):
    """t_interval takes any sequence (it took only arrays: a list failed on .mean()); all-equal
    values give the point itself."""
    low, high = t_interval(values)
    expected = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    if np.std(values) == 0:
        assert low == high == values[0]
    else:
        assert (low, high) == pytest.approx(expected)
    assert all(math.isnan(bound) for bound in t_interval([1.0]))


def test_bootstrap_intervals_of_a_mean_approach_the_t_interval_and_repeat():
    from slmlab.experiments.stats import bootstrap_intervals

    data = np.random.default_rng(1).normal(3.0, 2.0, 400)
    intervals = bootstrap_intervals(lambda drawn: {"mean": data[drawn].mean(), "sd": data[drawn].std()}, len(data))
    low, high = intervals["mean"]
    t_low, t_high = t_interval(data)
    assert low == pytest.approx(t_low, abs=0.05) and high == pytest.approx(t_high, abs=0.05)
    assert intervals == bootstrap_intervals(lambda drawn: {"mean": data[drawn].mean(), "sd": data[drawn].std()}, len(data))
    with np.errstate(divide="ignore"):  # a draw without item 0 divides by zero
        ratio = bootstrap_intervals(lambda drawn: {"ratio": np.float64(1.0) / (drawn == 0).sum()}, 3)
    assert ratio == {}  # some draw gives no finite value: no interval
    assert bootstrap_intervals(lambda drawn: {"mean": 1.0}, 1) == {}


def test_the_t_test_p_is_scipys_and_undefined_without_spread():
    d = [0.3, -0.1, 0.5, 0.2, 0.05]
    assert t_test_p(d) == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue)
    for undefined in ([0.4], [0.2, 0.2, 0.2], [0.1, math.inf], []):
        assert math.isnan(t_test_p(undefined))


def test_one_change_measured_on_every_seed_has_no_spread_whatever_the_rounding():
    """Every seed 10% worse: d = 10.000000000000009, ..., 9.999999999999987 after float rounding,
    whose rounding-sized spread gave a t-test p of ~1e-31 (a certain effect, from three seeds)."""
    result = paired_comparison({0: 1.1, 1: 2.2, 2: 3.3}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert result.sd == 0.0 and math.isnan(result.t_p) and result.ci_low == result.ci_high
    assert math.isnan(t_test_p([10.000000000000009, 9.999999999999987, 10.0]))
    assert t_test_p([1e-9, 1.2e-9, 0.9e-9]) < 0.05  # a tiny change with a real spread is still tested
