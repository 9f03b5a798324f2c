"""Augmentation settings: names, counts, the realism filter and one seed's training set, against plain
references."""
import numpy as np
import pytest

from tardiff import augment
from tardiff.augment import Mix


def pool(n, positive_rate, seed, features=2, offset=0.0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < positive_rate).astype(np.int64)
    X = (rng.normal(size=(n, 4, features)) + offset).astype(np.float32)
    return X, y


Y_REAL = np.r_[np.zeros(86), np.ones(14)].astype(np.int64)
X_REAL = np.zeros((100, 4, 2), np.float32)


def test_names_say_what_differs_from_the_plain_setting():
    assert Mix(sources=("cfg",), alpha=1.0).name == "cfg@1"
    assert Mix(sources=("timegan",), alpha=0.25, weight=0.5).name == "timegan@0.25 w0.5"
    assert Mix(sources=("cfg", "timegan"), alpha=2.0, balance="balanced").name == "pool@2 balanced"
    assert Mix(sources=("cfg",), alpha=1.0, realism=0.25).name == "cfg@1 realism0.25"
    for bad in ({"alpha": 0}, {"weight": 0}, {"weight": 1.5}, {"balance": "even"}, {"realism": 1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Mix(sources=("cfg",), **{"alpha": 1.0, **bad})
    with pytest.raises(ValueError, match="source"):
        Mix(sources=(), alpha=1.0)


def test_grid_has_every_source_at_every_alpha_and_each_mixing_once():
    settings = augment.grid(["cfg", "timegan"], alphas=(0.5, 1.0, 2.0), weights=(0.25, 0.5, 1.0), mix_alpha=1.0,
                            realism=0.25)
    names = [m.name for m in settings]
    assert len(names) == len(set(names))
    assert {"cfg@0.5", "cfg@1", "cfg@2", "timegan@0.5", "timegan@1", "timegan@2", "pool@0.5", "pool@1",
            "pool@2"} <= set(names)
    for s in ("cfg", "timegan"):
        assert {f"{s}@1 w0.25", f"{s}@1 w0.5", f"{s}@1 balanced", f"{s}@1 realism0.25"} <= set(names)
    assert len(names) == 2 * 3 + 2 * 4 + 3
    assert not any("pool" in m.name for m in augment.grid(["cfg"], (1.0,), (1.0,), 1.0, 0.0))


def test_counts_split_alpha_over_sources_and_labels():
    prevalence = augment.synthetic_counts(Mix(sources=("cfg",), alpha=0.5), Y_REAL)
    assert prevalence == {"cfg": {0: 43, 1: 7}}
    balanced = augment.synthetic_counts(Mix(sources=("cfg",), alpha=0.5, balance="balanced"), Y_REAL)
    assert balanced == {"cfg": {0: 25, 1: 25}}
    pooled = augment.synthetic_counts(Mix(sources=("a", "b", "c"), alpha=1.0), Y_REAL)
    assert sum(sum(c.values()) for c in pooled.values()) == 100
    assert sorted(sum(c.values()) for c in pooled.values()) == [33, 33, 34]


def test_realism_filter_drops_the_most_fake_per_label_against_a_loop():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 41)
    scores = rng.normal(size=41)
    kept = augment.kept_after_filter(scores, y, 0.25)
    want = []
    for label in (0, 1):
        idx = [i for i in range(41) if y[i] == label]
        ranked = sorted(idx, key=lambda i: scores[i])   # most fake first
        want += ranked[int(round(0.25 * len(idx))):]
    assert sorted(want) == kept.tolist()
    assert np.array_equal(augment.kept_after_filter(None, y, 0.0), np.arange(41))
    with pytest.raises(ValueError, match="realism scores"):
        augment.kept_after_filter(None, y, 0.25)


def test_training_set_draws_the_counts_without_replacement_and_weighs_synthetic_stays():
    pools = {"cfg": pool(300, 0.14, 1, offset=5.0), "timegan": pool(300, 0.3, 2, offset=-5.0)}
    mix = Mix(sources=("cfg", "timegan"), alpha=2.0, weight=0.5)
    X, y, w = augment.training_set(X_REAL, Y_REAL, pools, mix, seed=3)
    assert len(y) == 300 and np.array_equal(w, np.r_[np.ones(100), np.full(200, 0.5)].astype(np.float32))
    assert np.array_equal(X[:100], X_REAL) and np.array_equal(y[:100], Y_REAL)
    counts = augment.synthetic_counts(mix, Y_REAL)
    for source, sign in (("cfg", 1), ("timegan", -1)):
        rows = np.sign(X[100:, 0, 0]) == sign          # the offsets tell the sources apart
        assert {0: int((y[100:][rows] == 0).sum()), 1: int((y[100:][rows] == 1).sum())} == counts[source]
        drawn = X[100:][rows]
        assert len(np.unique(drawn.reshape(len(drawn), -1), axis=0)) == len(drawn)   # without replacement
    again = augment.training_set(X_REAL, Y_REAL, pools, mix, seed=3)
    other = augment.training_set(X_REAL, Y_REAL, pools, mix, seed=4)
    assert np.array_equal(again[0], X) and not np.array_equal(other[0], X)


def test_training_set_refuses_a_pool_too_small_naming_source_and_label():
    pools = {"cfg": pool(60, 0.1, 1)}
    with pytest.raises(ValueError, match=r"label 1 from 'cfg'"):
        augment.training_set(X_REAL, Y_REAL, pools, Mix(sources=("cfg",), alpha=1.0, balance="balanced"), seed=0)
    with pytest.raises(ValueError, match="needs synthetic set 'timegan'"):
        augment.training_set(X_REAL, Y_REAL, pools, Mix(sources=("timegan",), alpha=0.1), seed=0)


def test_realism_filter_only_keeps_stays_above_the_cut():
    X_syn, y_syn = pool(400, 0.5, 5)
    scores = X_syn[:, 0, 0].astype(np.float64)       # realism = the first value: larger is "more real"
    mix = Mix(sources=("cfg",), alpha=1.0, realism=0.5)
    X, y, _ = augment.training_set(X_REAL, Y_REAL, {"cfg": (X_syn, y_syn)}, mix, seed=0,
                                   realism_scores={"cfg": scores})
    for label in (0, 1):
        cut = np.sort(scores[y_syn == label])[::-1][:int((y_syn == label).sum()) - int(round(0.5 * (y_syn == label).sum()))].min()
        assert (X[100:][y[100:] == label][:, 0, 0] >= cut).all()


def test_realism_scores_rank_obvious_fakes_lowest_and_cover_every_stay(one_thread):
    from tardiff.fidelity import FidelityConfig

    rng = np.random.default_rng(0)
    X_real = rng.normal(size=(200, 4, 2)).astype(np.float32)
    X_syn = rng.normal(size=(160, 4, 2)).astype(np.float32)
    fake = np.arange(160) % 2 == 0
    X_syn[fake] += 4.0                                   # half of the pool is obviously fake
    config = FidelityConfig(hidden=8, epochs=5, batch_size=32, lr=1e-2)
    scores = augment.realism_scores(X_real, {"cfg": (X_syn, np.zeros(160, np.int64))}, config, seed=0)["cfg"]
    assert scores.shape == (160,) and np.isfinite(scores).all() and (scores != 0).all()
    kept = augment.kept_after_filter(scores, np.zeros(160, np.int64), 0.5)
    assert fake[kept].mean() < 0.1                       # the filter drops the fakes
