"""Evaluation: metrics against sklearn/loops, TSTR/TSRTR protocol, tables, fidelity and privacy sanity."""
import numpy as np
import pandas as pd
import pytest
from scipy.stats import wasserstein_distance
from sklearn.metrics import average_precision_score, roc_auc_score

from tardiff import evaluate as ev
from tardiff import fidelity as fid
from tardiff import metrics
from tardiff.real_data import RealData

T, F = 24, 8


def ar1_stays(n, seed, shift=0.0):
    """Smooth AR(1) stays (N, T, F); label-1 stays have channel 0 shifted up, so labels are learnable."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    X = np.zeros((n, T, F), np.float32)
    X[:, 0] = rng.normal(size=(n, F))
    for t in range(1, T):
        X[:, t] = 0.9 * X[:, t - 1] + np.sqrt(1 - 0.81) * rng.normal(size=(n, F))
    X[:, :, 0] += 1.5 * y[:, None]
    return X + shift, y


def real_splits(n_train=200, n_val=80, n_test=200):
    X_tr, y_tr = ar1_stays(n_train, 1)
    X_va, y_va = ar1_stays(n_val, 2)
    X_te, y_te = ar1_stays(n_test, 3)
    return RealData(X_tr, y_tr, X_va, y_va, X_te, y_te)


class MeanModel:
    """Stand-in downstream model: score = time-mean features . (positive mean - negative mean)."""

    def __init__(self, w):
        self.w = w


def mean_train(calls):
    def train_fn(X_train, y_train, X_val, y_val, config=None, train=None, seed=0, device=None, progress=False):
        calls.append({"n": len(y_train), "positives": int(y_train.sum()), "seed": seed, "X": X_train})
        m = X_train.mean(axis=1)
        return MeanModel(m[y_train == 1].mean(0) - m[y_train == 0].mean(0)), {}
    return train_fn


def mean_predict(model, X, device=None):
    return 1 / (1 + np.exp(-X.mean(axis=1) @ model.w))


def quick_config(calls=None, **kw):
    """The protocol with the stand-in downstream model; `calls` records each fit."""
    return ev.EvalConfig(classifier=None, train=None, n_seeds=3, n_boot=100, device="cpu",
                         train_fn=mean_train([] if calls is None else calls), predict_fn=mean_predict, **kw)


# --------------------------------------------------------------------------- metrics

def test_resample_metrics_equal_sklearn_on_the_materialised_resamples():
    """A bootstrap resample scored from stay counts (no sort of its own) equals sklearn on the repeated
    stays, ties included; the full sample is counts of one."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=60)
    p = rng.integers(0, 7, size=60).astype(float)  # many ties
    idx = rng.integers(0, 60, size=(40, 60))
    counts = metrics._resample_counts(idx, 60)
    assert counts.shape == (40, 60) and (counts.sum(1) == 60).all()
    np.testing.assert_allclose(metrics._auroc_counts(y, p, counts), [roc_auc_score(y[i], p[i]) for i in idx],
                               rtol=0, atol=1e-15)
    np.testing.assert_allclose(metrics._auprc_counts(y, p, counts),
                               [average_precision_score(y[i], p[i]) for i in idx], rtol=0, atol=1e-12)
    ones = np.ones((1, 60), dtype=np.int64)
    assert metrics._auroc_counts(y, p, ones)[0] == pytest.approx(roc_auc_score(y, p), abs=1e-15)
    assert metrics._auprc_counts(y, p, ones)[0] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    one_class = np.zeros((1, 60), dtype=np.int64)
    one_class[0, np.flatnonzero(y == 0)[0]] = 60
    assert np.isnan(metrics._auroc_counts(y, p, one_class)[0]) and np.isnan(metrics._auprc_counts(y, p, one_class)[0])


def test_binary_metrics_equal_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = rng.random(300) + 0.3 * y
    m = metrics.binary_metrics(y, p)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert m["auprc"] == pytest.approx(average_precision_score(y, p))
    assert (m["n"], m["positives"]) == (300, int(y.sum()))


def test_bootstrap_ci_contains_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(2)
    widths = []
    for n in (200, 5000):
        y = rng.integers(0, 2, n)
        p = rng.random(n) + 0.4 * y
        ci = metrics.bootstrap_ci(y, p, n_boot=400, seed=0)
        for name, point in (("auroc", roc_auc_score(y, p)), ("auprc", average_precision_score(y, p))):
            assert ci[name][0] <= point <= ci[name][1]
        widths.append(ci["auroc"][1] - ci["auroc"][0])
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(n): 5x narrower expected


# --------------------------------------------------------------------------- labels and subsamples

def test_unknown_labels_are_dropped_and_counted():
    real = real_splits()
    y_test = real.y_test.copy()
    y_test[:7] = -1
    splits = RealData(real.X_train, real.y_train, real.X_val, real.y_val, real.X_test, y_test,
                      dropped={"train_unknown_label": 5, "train_subsampled_by_profile": 9})
    assert splits.dropped["test_unknown_label"] == 7 and len(splits.y_test) == len(y_test) - 7
    assert splits.n_excluded == 12  # unknown labels, not the profile's subsampling
    with pytest.raises(ValueError, match="labels must be 0, 1 or -1"):
        RealData(real.X_train, real.y_train + 2, real.X_val, real.y_val, real.X_test, real.y_test)
    with pytest.raises(ValueError, match="both classes"):
        RealData(real.X_train, real.y_train, real.X_val, np.zeros_like(real.y_val), real.X_test, real.y_test)


# --------------------------------------------------------------------------- TSTR / TSRTR

def test_tsrtr_adds_stratified_alpha_fraction_of_synthetic():
    real = real_splits()
    X_syn, y_syn = ar1_stays(400, 9)
    calls = []
    df = ev.tsrtr({"ddpm": (X_syn, y_syn)}, real, "mortality", alphas=(0.2, 1.0), config=quick_config(calls))
    n_real, pos_real = len(real.y_train), int(real.y_train.sum())
    real_calls, syn_calls = calls[:3], calls[3:]
    assert all(c["n"] == n_real for c in real_calls)
    for alpha, group in zip((0.2, 1.0), (syn_calls[:3], syn_calls[3:])):
        n_syn = round(alpha * n_real)
        for c in group:
            assert c["n"] == n_real + n_syn
            assert abs((c["positives"] - pos_real) - n_syn * real.y_train.mean()) <= 1  # at the real prevalence
        assert not np.array_equal(group[0]["X"], group[1]["X"])  # each seed draws its own subsample
    assert list(df.columns[:8]) == list(ev.TSRTR_COLUMNS)
    assert df[["method", "alpha"]].values.tolist() == [["real", 0.0], ["ddpm", 0.2], ["ddpm", 1.0]]


def test_tstr_trains_on_synthetic_only_and_reports_exact_columns():
    real = real_splits()
    X_syn, y_syn = ar1_stays(150, 10)
    calls = []
    df = ev.tstr({"ddpm": (X_syn, y_syn), "tardiff": (X_syn, y_syn)}, real, "mortality", config=quick_config(calls))
    assert list(df.columns[:7]) == list(ev.TSTR_COLUMNS)
    assert df["method"].tolist() == ["real", "ddpm", "tardiff"]
    assert [c["n"] for c in calls] == [200] * 3 + [150] * 6
    assert (df["n_seeds"] == 3).all() and df["auroc_mean"].between(0.7, 1).all()  # labels are learnable
    assert (df["auroc_ci_low"] <= df["auroc_ensemble"]).all() and (df["auroc_ensemble"] <= df["auroc_ci_high"]).all()


def test_tstr_rejects_unlabelled_synthetic_set():
    real = real_splits()
    X_syn, _ = ar1_stays(50, 11)
    with pytest.raises(ValueError, match="pseudo_label"):
        ev.tstr({"ddpm": (X_syn, -np.ones(50))}, real, "mortality", config=quick_config())


@pytest.mark.slow
def test_tstr_with_the_real_downstream_classifier():
    from tardiff.classifier import ClassifierConfig, TrainConfig

    real = real_splits(120, 60, 120)
    X_syn, y_syn = ar1_stays(120, 12)
    config = ev.EvalConfig(classifier=ClassifierConfig(hidden=8, layers=1, dropout=0.0),
                           train=TrainConfig(max_epochs=2, patience=1, batch_size=64, monitor="loss"),
                           n_seeds=2, n_boot=50, device="cpu")
    df = ev.tstr({"cfg": (X_syn, y_syn)}, real, "mortality", config=config)
    assert df[["auroc_mean", "auprc_mean"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (df["auroc_sd"] >= 0).all()


def test_every_profile_selects_the_downstream_epoch_on_validation_loss():
    from tardiff.config import PROFILES, get_profile

    assert all(ev.EvalConfig.from_profile(get_profile(name)).train.monitor == "loss" for name in PROFILES)
    assert ev.EvalConfig().train.monitor == "loss"


def test_write_tables_csv_columns_and_paper_markdown(tmp_path):
    rows = [{"task": t, "method": m, "alpha": a, "auroc_mean": 0.7, "auroc_sd": 0.01, "auprc_mean": 0.3,
             "auprc_sd": 0.02, "n_seeds": 3, "auroc_ci_low": 0.68} for t in ("mortality", "long_stay") for m in ("real", "tardiff")
            for a in (0.2, 1.0)]
    csv_path, md_path = ev.write_tables(pd.DataFrame(rows), tmp_path, "tsrtr")
    assert list(pd.read_csv(csv_path).columns[:8]) == list(ev.TSRTR_COLUMNS)
    markdown = md_path.read_text()
    header = markdown.splitlines()[0]
    assert "mortality AUROC" in header and "long_stay AUPRC" in header
    assert "0.700 ± 0.010" in markdown and len(markdown.splitlines()) == 2 + 4  # methods x alphas rows
    tstr_rows = pd.DataFrame(rows).drop(columns="alpha").drop_duplicates(["task", "method"])
    csv_path, _ = ev.write_tables(tstr_rows, tmp_path, "tstr")
    assert list(pd.read_csv(csv_path).columns[:7]) == list(ev.TSTR_COLUMNS)


# --------------------------------------------------------------------------- fidelity

FAST = fid.FidelityConfig(hidden=8, epochs=8, batch_size=64, lr=1e-2, device="cpu")


def test_discriminative_score_copy_near_zero_noise_near_half():
    X_train, _ = ar1_stays(300, 20)
    X_holdout, _ = ar1_stays(300, 21)
    copy = fid.discriminative_score(X_holdout, X_train.copy(), FAST)
    noise = fid.discriminative_score(X_holdout, np.random.default_rng(0).normal(size=X_train.shape), FAST)
    assert copy < 0.1  # chance level: sd of accuracy on 300 held-out stays is ~.03
    assert noise > 0.4


def test_predictive_score_prefers_realistic_training_data():
    X_real, _ = ar1_stays(200, 21)
    X_test, _ = ar1_stays(100, 22)
    realistic = fid.predictive_score(X_real, X_test, FAST)
    noise = fid.predictive_score(np.random.default_rng(0).normal(size=X_real.shape), X_test, FAST)
    assert 0 < realistic < noise


def test_marginal_distance_matches_scipy_and_detects_shift():
    X_real, _ = ar1_stays(50, 23)
    X_syn, _ = ar1_stays(70, 24)
    expected = [wasserstein_distance(X_real[..., j].ravel(), X_syn[..., j].ravel()) for j in range(F)]
    np.testing.assert_allclose(fid.marginal_distance(X_real, X_syn), expected)
    np.testing.assert_allclose(fid.marginal_distance(X_real, X_real + 0.5), 0.5, atol=1e-5)


def test_autocorrelation_matches_loop_and_distance_zero_for_identical():
    X, _ = ar1_stays(30, 25)
    acf = fid.autocorrelation(X, max_lag=3)
    j, k = 2, 3
    values = X[..., j].astype(np.float64)
    centred = values - values.mean()
    pairs = [centred[i, t] * centred[i, t + k] for i in range(len(X)) for t in range(T - k)]
    assert acf[k - 1, j] == pytest.approx(np.mean(pairs) / np.mean(centred ** 2))
    assert fid.autocorrelation_distance(X, X.copy()) == 0.0
    noise = np.random.default_rng(0).normal(size=X.shape)  # AR(0.9) against white noise: ~.74 apart
    assert fid.autocorrelation_distance(X, noise) > 0.5


def test_fidelity_table_one_row_per_method():
    X_real, y = ar1_stays(80, 26)
    df = fid.fidelity_table({"ddpm": (X_real, y), "tardiff": (X_real + 1, y)}, X_real, X_real[:40],
                           fid.FidelityConfig(hidden=8, epochs=1, device="cpu"))
    assert df["method"].tolist() == ["ddpm", "tardiff"] and "marginal_HR" in df.columns
    assert df["marginal_distance"].iloc[0] == 0 and df["marginal_distance"].iloc[1] == pytest.approx(1, abs=1e-5)


# --------------------------------------------------------------------------- privacy

def test_nearest_distance_matches_loop():
    rng = np.random.default_rng(5)
    A, B = rng.normal(size=(37, 4, 3)), rng.normal(size=(23, 4, 3))
    expected = [min(np.linalg.norm(a.ravel() - b.ravel()) for b in B) for a in A]
    np.testing.assert_allclose(fid.nearest_distance(A, B, chunk=8, device="cpu"), expected, rtol=1e-9)


def test_copying_training_data_gives_zero_dcr_and_leaks_membership():
    X_train, _ = ar1_stays(150, 30)
    X_holdout, _ = ar1_stays(100, 31)
    out = fid.dcr(X_train.copy(), X_train, X_holdout, device="cpu")
    assert out["dcr_syn_median"] == 0 and out["dcr_syn_p5"] == 0 and out["dcr_holdout_median"] > 0
    assert out["dcr_ratio"] == 0
    assert fid.membership_inference_auc(X_train.copy(), X_train, X_holdout, device="cpu") > 0.95
    fresh, _ = ar1_stays(150, 32)  # same process, never saw the training stays
    assert abs(fid.membership_inference_auc(fresh, X_train, X_holdout, device="cpu") - 0.5) < 0.15
    table = fid.privacy_table({"copy": (X_train, None)}, X_train, X_holdout, device="cpu")
    assert table.columns.tolist() == ["method", "dcr_syn_median", "dcr_syn_p5", "dcr_holdout_median",
                                      "dcr_holdout_p5", "dcr_ratio", "mia_auc"]


# --------------------------------------------------------------------------- paired differences

def test_paired_difference_equals_per_seed_sklearn_and_is_zero_against_itself():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(int)
    a = rng.random((3, 300)) + 0.3 * y
    b = rng.random((3, 300)) + 0.1 * y
    out = metrics.paired_difference(y, a, b, n_boot=200, seed=1)
    want = np.mean([roc_auc_score(y, p) - roc_auc_score(y, q) for p, q in zip(a, b)])
    assert out["auroc"][0] == pytest.approx(want, abs=1e-12)
    want = np.mean([average_precision_score(y, p) - average_precision_score(y, q) for p, q in zip(a, b)])
    assert out["auprc"][0] == pytest.approx(want, abs=1e-12)
    assert out["auroc"][1] < out["auroc"][0] < out["auroc"][2]
    same = metrics.paired_difference(y, a, a, n_boot=50)
    assert same["auroc"] == (0.0, 0.0, 0.0) and same["auprc"] == (0.0, 0.0, 0.0)


def test_paired_ci_covers_the_truth_on_a_known_gap():
    """A method whose scores carry more signal: its CI excludes 0; a permuted copy's CI covers 0."""
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.2).astype(int)
    noise = rng.normal(size=(2, 2000))
    strong, weak = noise + 1.0 * y, noise + 0.3 * y
    assert metrics.paired_difference(y, strong, weak, n_boot=300)["auroc"][1] > 0
    other_weak = rng.normal(size=(2, 2000)) + 0.3 * y  # as good as `weak`, independent noise
    low, high = metrics.paired_difference(y, other_weak, weak, n_boot=300)["auroc"][1:]
    assert low <= 0 <= high


def test_paired_difference_needs_matching_shapes():
    with pytest.raises(ValueError, match="n_seeds"):
        metrics.paired_difference(np.array([0, 1, 0]), np.zeros((2, 3)), np.zeros((3, 3)))


def test_fit_then_predict_equals_downstream_protocol():
    real = real_splits()
    X_syn, y_syn = ar1_stays(100, 41)
    config = quick_config()
    models = ev.fit_downstream(X_syn, y_syn, real, config)
    probas = ev.predict_seeds(models, real.X_test, config)
    assert probas.shape == (config.n_seeds, len(real.y_test))
    row = ev.utility(real.y_test, probas, config)
    table = ev.tstr({"s": (X_syn, y_syn)}, real, "mortality", config, include_real=False).iloc[0]
    assert row["auroc_mean"] == pytest.approx(table["auroc_mean"]) and row["auprc_sd"] == pytest.approx(table["auprc_sd"])


def test_discriminative_scores_over_seeds_report_spread():
    from dataclasses import replace

    real, _ = ar1_stays(120, 50)
    syn, _ = ar1_stays(120, 51, shift=1.5)
    config = fid.FidelityConfig(hidden=8, epochs=3, device="cpu")
    mean, sd = fid.discriminative_scores(real, syn, config, n_seeds=3)
    each = [fid.discriminative_score(real, syn, replace(config, seed=i)) for i in range(3)]
    assert mean == pytest.approx(np.mean(each)) and sd == pytest.approx(np.std(each, ddof=1))
