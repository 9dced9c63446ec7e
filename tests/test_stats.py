"""Intervals, paired comparisons, verdict bands, the trivial-predictor guard and timing margins
(mpstudy.stats), against known answers: simulated dev sets whose true score is known, hand counts,
and the single-call metrics of mpstudy.metrics as the oracle of their batched forms."""
import math

import numpy as np
import pytest
from scipy.stats import rankdata

from mpstudy import metrics, stats
from mpstudy.measure import Timing
from mpstudy.stats import FAILS, HOLDS, INCONCLUSIVE, Interval

SETS = 200  # simulated dev sets per coverage check (coverage's standard error ~1.5 points at 95 %)


# --------------------------------------------------------------------------- simulated dev sets


def classification_set(rng, n=200, positives=80, recall=0.8, specificity=0.8):
    """A dev set with a fixed label balance and a predictor right with a known probability per class."""
    y = np.array([1] * positives + [0] * (n - positives))
    rng.shuffle(y)
    right = np.where(y == 1, rng.random(n) < recall, rng.random(n) < specificity)
    return np.where(right, y, 1 - y), y


def population_confusion(pi=0.4, recall=0.75, specificity=0.85):
    """Population rates TP, FN, FP, TN of that predictor (the truth the intervals should cover)."""
    return pi * recall, pi * (1 - recall), (1 - pi) * (1 - specificity), (1 - pi) * specificity


def gaussian_pairs(rng, n=200, rho=0.6):
    x = rng.normal(size=n)
    return x, rho * x + math.sqrt(1 - rho**2) * rng.normal(size=n)


def dev_set(rng, n=200, difficulty=0.15):
    """Labels (80 positives) and each example's difficulty d_i = +-difficulty (mean 0)."""
    y = np.array([1] * 80 + [0] * (n - 80))
    rng.shuffle(y)
    return y, rng.choice([-difficulty, difficulty], n)


def seed_predictions(rng, y, d, k=3, mean=0.8, seed_sd=0.02):
    """k seeds of one recipe: seed s is right on example i with probability mean + u_s + d_i,
    u_s ~ N(0, seed_sd^2) the seed-to-seed spread, d_i shared by every seed. True accuracy: ``mean``."""
    return {s: np.where(rng.random(len(y)) < np.clip(mean + rng.normal(0, seed_sd) + d, 0, 1), y, 1 - y)
            for s in range(k)}


def seeded_runs(rng, k=3, seed_sd=0.02):
    y, d = dev_set(rng)
    return seed_predictions(rng, y, d, k, seed_sd=seed_sd), y


def coverage(make, truth, task, metric, resamples=300, sets=SETS, seed=0):
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(sets):
        predictions, references = make(rng)
        hits += stats.score_interval(task, predictions, references, metric, resamples=resamples, seed=i).contains(truth)
    return hits / sets


# --------------------------------------------------------------------------- batched metrics = single-call metrics


def test_batched_classification_metrics_match_sklearn_on_resamples():
    rng = np.random.default_rng(0)
    for classes in (2, 3):
        y = rng.integers(0, classes, 60)
        p = np.where(rng.random(60) < 0.6, y, rng.integers(0, classes, 60))
        idx = rng.integers(0, 60, (25, 60))
        conf = metrics.confusion_counts(p[idx], y[idx], classes)
        assert conf.shape == (25, classes, classes)
        for row, i in enumerate(idx):
            assert metrics.accuracy_from_confusion(conf[row]) == pytest.approx(metrics.accuracy(p[i], y[i]))
            assert metrics.matthews_from_confusion(conf[row]) == pytest.approx(metrics.matthews(p[i], y[i]))
            if classes == 2:
                assert metrics.f1_from_confusion(conf[row]) == pytest.approx(metrics.f1(p[i], y[i]))
    # the conventions at the edges: no positive anywhere -> F1 0; a constant prediction -> MCC 0
    conf = metrics.confusion_counts(np.zeros(5, int), np.zeros(5, int), 2)
    assert metrics.f1_from_confusion(conf) == 0.0 == metrics.f1([0] * 5, [0] * 5)
    conf = metrics.confusion_counts(np.ones(4, int), np.array([0, 1, 0, 1]), 2)
    assert metrics.matthews_from_confusion(conf) == 0.0 == metrics.matthews([1] * 4, [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
        metrics.confusion_counts([0, 2], [0, 1], 2)


def test_batched_correlations_and_resample_ranks_match_scipy():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 12, 80).astype(float)  # ties on purpose (STS-B golds repeat)
    z = x + rng.normal(size=80)
    idx = rng.integers(0, 80, (20, 80))
    batched = metrics.pearson_spearman_batched(z[idx], x[idx])
    for row, i in enumerate(idx):
        single = metrics.pearson_spearman(z[i], x[i])
        assert batched["pearson"][row] == pytest.approx(single["pearson"])
        assert batched["spearman"][row] == pytest.approx(single["spearman"])
    codes, levels = stats._order_codes(x)
    assert np.allclose(stats._average_ranks(codes[idx], levels), rankdata(x[idx], axis=-1))
    flat = metrics.pearson_spearman_batched(np.ones((2, 5)), np.arange(10.0).reshape(2, 5))
    assert np.isnan(flat["pearson"]).all() and np.isnan(flat["spearman"]).all()  # constant side: NaN, as the metric


def test_bleu_from_statistics_is_sacrebleus_corpus_bleu_of_the_resample():
    rng = np.random.default_rng(2)
    words = ["ein", "mann", "hund", "rennt", "auf", "der", "strasse", "mit", "katze"]
    refs = [" ".join(rng.choice(words, rng.integers(4, 9))) for _ in range(40)]
    hyps = [" ".join(w if rng.random() < 0.7 else "x" for w in r.split()) for r in refs]
    table = metrics.bleu_statistics(hyps, refs)
    assert table.shape == (40, 10)
    assert metrics.bleu_from_statistics(table.sum(0)) == pytest.approx(metrics.bleu(hyps, refs))
    for i in rng.integers(0, 40, (5, 40)):
        assert metrics.bleu_from_statistics(table[i].sum(0)) == pytest.approx(
            metrics.bleu([hyps[j] for j in i], [refs[j] for j in i]))


# --------------------------------------------------------------------------- coverage at the nominal rate


def test_accuracy_interval_covers_the_true_accuracy_at_about_95_percent():
    covered = coverage(lambda g: classification_set(g), 0.8, "sst2", "accuracy")
    assert 0.90 <= covered <= 0.99, covered


def test_f1_and_mcc_intervals_cover_the_population_values():
    tp, fn, fp, tn = population_confusion()
    f1 = 2 * tp / (2 * tp + fp + fn)
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    make = lambda g: classification_set(g, recall=0.75, specificity=0.85)
    covered_f1 = coverage(make, f1, "mrpc", "f1", seed=1)
    covered_mcc = coverage(make, mcc, "cola", "matthews", seed=2, sets=100)
    assert 0.90 <= covered_f1 <= 0.99, covered_f1
    assert 0.88 <= covered_mcc <= 1.0, covered_mcc  # 100 sets: a wider band


def test_spearman_interval_covers_the_known_rank_correlation():
    rho = 0.6
    truth = 6 / math.pi * math.asin(rho / 2)  # Spearman's rho of a bivariate normal with Pearson rho
    covered = coverage(lambda g: gaussian_pairs(g, rho=rho), truth, "stsb", "spearman", seed=3)
    assert 0.90 <= covered <= 0.99, covered


def test_seed_combined_interval_covers_the_recipes_true_score():
    """Three seeds with a known seed-to-seed spread and a shared example difficulty: the interval of the
    mean covers the recipe's true accuracy; the example bootstrap of one seed alone would not."""
    rng = np.random.default_rng(4)
    hits = single_hits = 0
    for i in range(SETS):
        runs, y = seeded_runs(rng, seed_sd=0.03)
        interval = stats.score_interval("sst2", runs, y, resamples=150, seed=i)
        assert interval.seeds == 3 and interval.low <= interval.estimate <= interval.high
        hits += interval.contains(0.8)
        if i < 100:
            single = stats.score_interval("sst2", runs[0], y, resamples=150, seed=i, method="percentile")
            single_hits += single.contains(0.8)
    assert 0.90 <= hits / SETS <= 0.99, hits / SETS
    assert single_hits / 100 < 0.90, single_hits / 100  # one seed's interval misses the seed spread


# --------------------------------------------------------------------------- the seed-combined interval, exactly


def test_one_seed_is_the_example_interval_and_says_seeds_1():
    p, y = classification_set(np.random.default_rng(5))
    alone = stats.score_interval("sst2", p, y, resamples=300)
    mapped = stats.score_interval("sst2", {7: p}, y, resamples=300)
    assert alone == mapped and alone.seeds == 1 and alone.n == 200 and alone.estimate == metrics.accuracy(p, y)
    assert "BCa" in alone.method and "within each of 2 gold classes" in alone.method


def test_seeds_without_spread_give_the_example_interval_of_their_mean():
    """Identical seeds: no seed variance, the shared part is the whole example variance -> a normal interval
    as wide as the example bootstrap's."""
    p, y = classification_set(np.random.default_rng(6))
    alone = stats.score_interval("sst2", p, y, resamples=1000)
    same = stats.score_interval("sst2", {0: p, 1: p, 2: p}, y, resamples=1000)
    assert same.estimate == alone.estimate and same.df == math.inf and same.seeds == 3
    assert same.half_width == pytest.approx(1.96 * alone.se, rel=1e-3)
    assert same.half_width == pytest.approx(alone.half_width, rel=0.15)


def test_seed_spread_alone_gives_the_student_t_interval():
    """Seeds wrong on disjoint examples share no dev-sampling error (resampled, their error counts are
    negatively correlated, so the shared part is clamped at 0): the interval is the t interval of the
    seed scores, t(2) for three seeds."""
    y = np.array([0, 1] * 100)
    runs = {s: y.copy() for s in range(3)}
    runs[0][:30] = 1 - y[:30]  # 85 % right
    runs[1][30:65] = 1 - y[30:65]  # 82.5 %
    runs[2][65:115] = 1 - y[65:115]  # 75 %
    scores = np.array([0.85, 0.825, 0.75])
    interval = stats.score_interval("sst2", runs, y, resamples=500)
    half_t = 4.302652729911275 * scores.std(ddof=1) / math.sqrt(3)  # t(0.975, df=2)
    assert interval.estimate == pytest.approx(scores.mean())
    assert interval.half_width == pytest.approx(half_t) and interval.df == pytest.approx(2)
    assert interval.se == pytest.approx(scores.std(ddof=1) / math.sqrt(3))


# --------------------------------------------------------------------------- paired comparisons


def test_identical_predictions_differ_by_exactly_nothing():
    p, y = classification_set(np.random.default_rng(7))
    d = stats.paired_difference("sst2", p, p, y, resamples=200)
    assert (d.estimate, d.low, d.high, d.mcnemar_p) == (0.0, 0.0, 0.0, 1.0) and d.contains(0.0)
    assert "percentile" in d.method and d.seeds == 1
    f1 = stats.paired_difference("mrpc", p, p, y, resamples=200)
    assert f1.contains(0.0) and f1.mcnemar_p is None  # McNemar is a test of accuracy
    seeds = stats.paired_difference("sst2", {0: p, 1: 1 - p}, {0: p, 1: 1 - p}, y, resamples=200)
    assert seeds.paired_by == "seeds and examples" and seeds.contains(0.0) and seeds.half_width == pytest.approx(0.0)


def test_mcnemar_by_hand():
    y = np.zeros(20, int)
    a = np.zeros(20, int)
    b = np.zeros(20, int)
    b[:8] = 1  # a right and b wrong on 8 examples, never the other way: p = 2 * 0.5**8
    assert stats.mcnemar(a, b, y) == pytest.approx(2 * 0.5**8)
    b[8] = 1
    a[8] = 1  # both wrong: not a discordant pair
    assert stats.mcnemar(a, b, y) == pytest.approx(2 * 0.5**8)
    assert stats.mcnemar(a, a, y) == 1.0
    with pytest.raises(ValueError, match="same non-zero length"):
        stats.mcnemar(a, b[:5], y)


def test_paired_tests_reject_a_true_null_about_5_percent_of_the_time_and_detect_a_real_gap():
    """Two independent draws of the same predictor (true difference 0): the 95 % interval excludes 0 and
    McNemar's p < 0.05 in about 5 % of dev sets (exact McNemar: at most). A 10-point gap is found."""
    rng = np.random.default_rng(8)
    rejected = mcnemar_rejected = found = 0
    for i in range(SETS):
        a, y = classification_set(rng)
        b = np.where(rng.random(200) < 0.8, y, 1 - y)
        d = stats.paired_difference("sst2", a, b, y, resamples=200, seed=i)
        rejected += not d.contains(0.0)
        mcnemar_rejected += d.mcnemar_p < 0.05
        if i < 50:
            better = np.where(rng.random(200) < 0.95, y, 1 - y)
            found += stats.paired_difference("sst2", better, a, y, resamples=300, seed=i).low > 0
    assert 0.01 <= rejected / SETS <= 0.10, rejected / SETS
    assert mcnemar_rejected / SETS <= 0.10, mcnemar_rejected / SETS
    assert found / 50 >= 0.9, found / 50


@pytest.mark.parametrize("matched", [True, False])
def test_paired_seeds_reject_a_true_null_about_5_percent_of_the_time(matched):
    rng = np.random.default_rng(9 + matched)
    rejected = 0
    sets = 150
    for i in range(sets):
        y, d = dev_set(rng)
        runs_a, runs_b = seed_predictions(rng, y, d), seed_predictions(rng, y, d)  # one recipe, twice
        if not matched:
            runs_b = {s + 10: v for s, v in runs_b.items()}
        d = stats.paired_difference("sst2", runs_a, runs_b, y, resamples=100, seed=i)
        assert d.paired_by == ("seeds and examples" if matched else "examples (seeds independent)") and d.seeds == 3
        rejected += not d.contains(0.0)
    assert rejected / sets <= 0.10, rejected / sets


def test_b_factor_turns_a_retention_claim_into_a_difference():
    p, y = classification_set(np.random.default_rng(11))
    q = np.where(np.random.default_rng(12).random(200) < 0.9, p, 1 - p)
    d = stats.paired_difference("sst2", q, p, y, b_factor=0.99, resamples=300)
    assert d.estimate == pytest.approx(metrics.accuracy(q, y) - 0.99 * metrics.accuracy(p, y)) and d.b_factor == 0.99


# --------------------------------------------------------------------------- verdict bands


def iv(low, high, seeds=3, se=0.01, df=math.inf):
    return Interval((low + high) / 2, low, high, 0.95, seeds, 100, se, df)


@pytest.mark.parametrize("low, high, threshold, direction, expected", [
    (0.80, 0.90, 0.75, "at least", HOLDS),  # the whole interval above
    (0.75, 0.90, 0.75, "at least", HOLDS),  # touching the bound still satisfies "at least"
    (0.60, 0.70, 0.75, "at least", FAILS),  # the whole interval below
    (0.70, 0.80, 0.75, "at least", INCONCLUSIVE),  # straddles
    (0.60, 0.70, 0.75, "at most", HOLDS),
    (0.80, 0.90, 0.75, "at most", FAILS),
    (0.70, 0.80, 0.75, "<=", INCONCLUSIVE),
    (-0.005, 0.008, 0.01, "within", HOLDS),  # inside ±1 point
    (0.02, 0.04, 0.01, "within ±", FAILS),  # wholly above +1 point
    (-0.04, -0.02, 0.01, "within", FAILS),  # wholly below -1 point
    (-0.02, 0.005, 0.01, "within", INCONCLUSIVE),  # reaches beyond -1 point
    (-0.02, 0.02, 0.01, "within", INCONCLUSIVE),  # wider than the band itself: never holds
])
def test_band_verdicts_on_both_sides_and_between(low, high, threshold, direction, expected):
    result = stats.band(iv(low, high), threshold, direction)
    assert result.verdict == expected, result.reason
    one_seed = stats.band(iv(low, high, seeds=1), threshold, direction)
    assert one_seed.verdict == INCONCLUSIVE and f"would read: {expected}" in one_seed.reason


def test_band_edges_and_errors():
    assert stats.band(iv(0.8, 0.9, seeds=None), 0.7).verdict == HOLDS  # a timing has no seeds to ask for
    undefined = Interval(math.nan, math.nan, math.nan, seeds=3)
    assert stats.band(undefined, 0.5).verdict == INCONCLUSIVE
    around = stats.band(iv(0.51, 0.52), 0.02, "within", center=0.5)
    assert around.verdict == HOLDS and around.center == 0.5
    with pytest.raises(ValueError, match="direction must be one of"):
        stats.band(iv(0.1, 0.2), 0.1, "above")
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        stats.band(iv(0.1, 0.2), -0.1, "within")


def test_detectable_effect_is_the_80_percent_power_distance():
    assert stats.detectable_effect(iv(0.7, 0.8, se=0.01)) == pytest.approx((1.959964 + 0.841621) * 0.01)
    t_interval = iv(0.7, 0.8, se=0.01, df=2)
    assert stats.detectable_effect(t_interval) == pytest.approx((4.302653 + 1.060660) * 0.01, rel=1e-5)
    no_se = Interval(1.0, 0.9, 1.1, seeds=None, se=math.nan)  # half-width 0.1 = 1.96 se
    assert stats.detectable_effect(no_se) == pytest.approx(0.1 * (1 + 0.841621 / 1.959964), rel=1e-5)
    assert stats.band(iv(0.7, 0.8), 0.75).detectable == stats.detectable_effect(iv(0.7, 0.8))


# --------------------------------------------------------------------------- the trivial predictor


def test_trivial_scores_by_hand():
    y = np.array([1] * 68 + [0] * 32)  # MRPC-like: 68 % paraphrases
    assert stats.trivial_score("mrpc", y, "accuracy") == pytest.approx(0.68)
    assert stats.trivial_score("mrpc", y) == pytest.approx(2 * 0.68 / 1.68)  # F1 of always 1: P .68, R 1
    assert stats.trivial_score("mrpc", 1 - y) == pytest.approx(2 * 0.32 / 1.32)  # the best constant, not the majority
    assert stats.trivial_score("cola", y) == 0.0  # MCC of a constant
    assert stats.trivial_score("sst2", np.array([0, 0, 1])) == pytest.approx(2 / 3)
    assert stats.trivial_score("stsb", [0.0, 2.5, 5.0]) == 0.0  # a constant's correlation: undefined, counted 0
    refs = ["ein hund rennt", "eine katze sitzt hier"]
    sources = ["a dog runs", "a cat sits hier"]
    assert stats.trivial_score("multi30k", refs) == 0.0
    assert stats.trivial_score("multi30k", refs, sources=sources) == pytest.approx(metrics.bleu(sources, refs))
    with pytest.raises(ValueError, match="not reported for task 'sst2'"):
        stats.trivial_score("sst2", y, "f1")


def test_baseline_learned_needs_the_whole_interval_above_trivial():
    learned = stats.baseline_learned(Interval(0.85, 0.82, 0.88), 0.81)
    assert learned and learned.learned and "above the trivial predictor" in learned.reason
    ok, reason = stats.baseline_learned(Interval(0.83, 0.79, 0.87), 0.81)  # estimate above, interval not
    assert not ok and "no retained-quality statement" in reason
    assert not stats.baseline_learned(Interval(0.5, 0.4, 0.6, seeds=3), 0.6)
    assert stats.baseline_learned(Interval(0.3, 0.1, 0.5), math.nan)  # an undefined trivial score counts as 0
    assert not stats.baseline_learned(Interval(math.nan, math.nan, math.nan), 0.0)


# --------------------------------------------------------------------------- timing margins


def timing(a, b):
    return Timing(seconds={"dense": list(a), "svd": list(b)}, order=["dense", "svd"], threads=1, repeats=len(a),
                  warmup=0)


def test_ratio_interval_is_the_order_statistics_interval_of_the_median():
    dense = np.linspace(1.0, 1.9, 10)
    svd = np.ones(10)
    t = timing(dense, svd)
    r = stats.ratio_interval(t, "dense", "svd")
    assert r.estimate == pytest.approx(t.ratio("dense", "svd")) and r.seeds is None and r.n == 10
    assert (r.low, r.high) == pytest.approx((1.1, 1.8))  # 2nd and 9th of 10: coverage 1 - 2 * 11/1024
    assert "0.979" in r.method
    assert stats.timing_band(t, "dense", "svd", 1.05).verdict == HOLDS
    assert stats.timing_band(t, "dense", "svd", 1.5).verdict == INCONCLUSIVE  # inside the run-to-run spread
    assert stats.timing_band(t, "dense", "svd", 2.0).verdict == FAILS
    few = stats.ratio_interval(timing(dense[:5], svd[:5]), "dense", "svd")
    assert (few.low, few.high) == (-math.inf, math.inf) and "needs >= 6 rounds" in few.method
    assert stats.timing_band(timing(dense[:5], svd[:5]), "dense", "svd", 0.5).verdict == INCONCLUSIVE
    pooled = stats.ratio_interval([timing(dense[:5], svd[:5]), timing(dense[5:], svd[5:])], "dense", "svd")
    assert (pooled.low, pooled.high) == pytest.approx((r.low, r.high))
    with pytest.raises(ValueError, match="no timing named 'int8'"):
        stats.ratio_interval(t, "dense", "int8")


def test_ratio_interval_covers_the_true_median_ratio():
    rng = np.random.default_rng(13)
    hits = 0
    for _ in range(2000):
        dense = rng.lognormal(0.0, 0.1, 12) * 2.0
        hits += stats.ratio_interval(timing(dense, np.ones(12)), "dense", "svd").contains(2.0)
    assert 0.945 <= hits / 2000 <= 0.98, hits / 2000  # 0.961 exactly at 12 rounds, whatever the distribution


# --------------------------------------------------------------------------- BLEU, determinism, the record form, errors


def test_bleu_interval_is_around_the_corpus_bleu():
    rng = np.random.default_rng(14)
    words = ["ein", "mann", "hund", "rennt", "auf", "der", "strasse", "mit", "katze", "rot"]
    refs = [" ".join(rng.choice(words, rng.integers(4, 9))) for _ in range(60)]
    hyps = [" ".join(w if rng.random() < 0.7 else "x" for w in r.split()) for r in refs]
    interval = stats.score_interval("multi30k", hyps, refs, resamples=200)
    assert interval.estimate == pytest.approx(metrics.bleu(hyps, refs))
    assert 0 <= interval.low < interval.estimate < interval.high <= 100 and interval.n == 60


def test_same_seed_same_interval():
    p, y = classification_set(np.random.default_rng(15))
    runs, ys = seeded_runs(np.random.default_rng(16))
    for args in (("mrpc", p, y), ("sst2", runs, ys)):
        first = stats.score_interval(*args, resamples=300, seed=3)
        assert stats.score_interval(*args, resamples=300, seed=3) == first
        assert stats.score_interval(*args, resamples=300, seed=4) != first
    x, z = gaussian_pairs(np.random.default_rng(17))
    d1 = stats.paired_difference("stsb", x, z, z, resamples=300, seed=5)
    assert stats.paired_difference("stsb", x, z, z, resamples=300, seed=5) == d1


def test_interval_record_round_trip_and_text():
    interval = Interval(0.8123, 0.79, 0.834, seeds=3, n=408, se=0.011, df=2.5, method="t")
    assert Interval.from_dict(interval.as_dict()) == interval
    assert str(interval) == "0.8123 [0.79, 0.834]"
    with pytest.raises(ValueError, match="unknown Interval fields"):
        Interval.from_dict({**interval.as_dict(), "width": 1})
    with pytest.raises(ValueError, match="above high"):
        Interval(0.5, 0.6, 0.4)


@pytest.mark.parametrize("kwargs, match", [
    ({"level": 95}, "level must be a confidence level"),
    ({"resamples": 5}, "resamples must be an int >= 10"),
    ({"method": "studentized"}, "method must be one of"),
    ({"metric": "bleu"}, "not reported for task 'sst2'"),
    ({"seed": -1}, "seed must be an int >= 0"),
])
def test_bad_options_are_refused_in_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match):
        stats.score_interval("sst2", [0, 1, 1], [0, 1, 0], **kwargs)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="length mismatch"):
        stats.score_interval("sst2", [0, 1], [0, 1, 0])
    with pytest.raises(ValueError, match="empty mapping"):
        stats.score_interval("sst2", {}, [0, 1, 0])
    with pytest.raises(ValueError, match="b_factor must be a finite number"):
        stats.paired_difference("sst2", [0, 1], [0, 1], [0, 1], b_factor=math.inf)
    constant = stats.score_interval("stsb", [1.0, 1.0, 1.0], [0.0, 1.0, 2.0])  # undefined, not made up
    assert math.isnan(constant.estimate) and stats.band(constant, 0.0).verdict == INCONCLUSIVE


def test_seeds_with_equal_scores_on_different_rows_do_not_give_a_zero_width_difference():
    """Three seeds that each lose a *different* dev row to the baseline: the per-seed differences are
    equal (s^2 = 0), yet the examples they differ on are not shared, so the interval is not a point."""
    y = np.array([0, 1] * 32)
    base = {s: y.copy() for s in range(3)}
    runs = {s: y.copy() for s in range(3)}
    for s in range(3):
        runs[s][s] = 1 - y[s]
    diff = stats.paired_difference("sst2", runs, base, y, resamples=500)
    assert diff.estimate == pytest.approx(-1 / 64) and diff.seeds == 3
    assert diff.low < diff.estimate < diff.high and diff.high - diff.low > 0.01
