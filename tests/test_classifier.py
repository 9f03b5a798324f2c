"""Classifier training: learns a separable toy, repeats for a seed, restores its best epoch, round-trips."""
import numpy as np
import pytest
import torch

from tardiff.classifier import (ClassifierConfig, RNNClassifier, TrainConfig, load_classifier, predict_proba,
                                save_classifier, train_classifier)

SMALL = ClassifierConfig(hidden=16, layers=1, dropout=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def toy(n, seed, noise_labels=False):
    """(n, 8, 3) stays; label = whether channel 0 runs high on average (or coin flips)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8, 3)).astype(np.float32)
    y = rng.integers(0, 2, n) if noise_labels else (X[:, :, 0].mean(1) > 0).astype(int)
    return X, y


def test_learns_separable_toy():
    X, y = toy(400, 0)
    Xv, yv = toy(200, 1)
    model, hist = train_classifier(X, y, Xv, yv, SMALL, TrainConfig(max_epochs=8, batch_size=64, lr=1e-2),
                                   progress=False)
    assert max(hist["val_auroc"]) > 0.9
    assert isinstance(model, RNNClassifier) and not model.training
    assert set(hist) >= {"train_loss", "val_loss", "val_auroc", "val_auprc", "best_epoch", "best_score",
                         "epochs_run", "wall_time_s"}
    assert len(hist["train_loss"]) == hist["epochs_run"]


def test_seeded_training_repeats_and_seeds_differ():
    X, y = toy(200, 0)
    Xv, yv = toy(100, 1)
    cfg = ClassifierConfig(hidden=8, layers=2, dropout=0.3)  # dropout: the seed must cover it too
    train = TrainConfig(max_epochs=2, batch_size=32)
    runs = [train_classifier(X, y, Xv, yv, cfg, train, seed=s, progress=False) for s in (3, 3, 4)]
    (a, ha), (b, hb), (c, _) = runs
    assert ha["train_loss"] == hb["train_loss"]
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    assert not torch.equal(a.head.weight, c.head.weight)


def test_early_stopping_restores_best_epoch():
    # Random labels and a big learning rate: the validation loss bottoms out early, then climbs.
    X, y = toy(300, 0, noise_labels=True)
    Xv, yv = toy(100, 1, noise_labels=True)
    train = TrainConfig(max_epochs=15, patience=2, monitor="loss", batch_size=32, lr=3e-2)
    model, hist = train_classifier(X, y, Xv, yv, ClassifierConfig(hidden=32, layers=1, dropout=0.0), train,
                                   progress=False)
    best = hist["best_epoch"]
    assert best == int(np.argmin(hist["val_loss"]))
    assert best < hist["epochs_run"] - 1, "scenario should stop after a worse epoch"
    assert hist["epochs_run"] == best + 1 + train.patience
    p = np.clip(predict_proba(model, Xv), 1e-7, 1 - 1e-7)
    val_loss = -np.mean(yv * np.log(p) + (1 - yv) * np.log(1 - p))
    assert val_loss == pytest.approx(hist["val_loss"][best], rel=1e-4)


def test_save_load_round_trip(tmp_path):
    X, y = toy(100, 0)
    model, _ = train_classifier(X, y, X, y, SMALL, TrainConfig(max_epochs=1), progress=False)
    path = save_classifier(model, tmp_path / "clf.pt", auroc=0.9)
    loaded, extra = load_classifier(path, device="cpu", with_extra=True)
    assert extra == {"auroc": 0.9}
    assert loaded.config == model.config
    np.testing.assert_array_equal(predict_proba(loaded, X), predict_proba(model, X))
    p = predict_proba(model, torch.as_tensor(X), batch_size=7)  # tensors and odd batches work too
    assert p.shape == (100,) and ((p >= 0) & (p <= 1)).all()


@pytest.mark.parametrize("case, param", [("single_class", "y_train"), ("lengths", "y_train"),
                                         ("nan", "X_train"), ("val_nan", "X_val"), ("labels", "y_val")])
def test_bad_input_names_the_parameter(case, param):
    X, y = toy(40, 0)
    Xv, yv = X.copy(), y.copy()
    train = TrainConfig(max_epochs=1)
    if case == "single_class":
        y = np.zeros_like(y)
    elif case == "lengths":
        y = y[:-1]
    elif case == "nan":
        X[3, 2, 1] = np.nan
    elif case == "val_nan":
        Xv[0, 0, 0] = np.inf
    elif case == "labels":
        yv = yv + 1
    with pytest.raises(ValueError, match=param):
        train_classifier(X, y, Xv, yv, SMALL, train, progress=False)


def test_cnn_downstream_learns_and_round_trips(tmp_path):
    from tardiff.classifier import CNNClassifier, load_classifier, save_classifier

    X, y = toy(240, seed=0)
    Xv, yv = toy(80, seed=1)
    seen = []
    model, history = train_classifier(X, y, Xv, yv, config=ClassifierConfig(rnn="cnn", hidden=8, dropout=0.0),
                                      train=TrainConfig(max_epochs=6, patience=6, batch_size=32, monitor="loss"),
                                      seed=0, device="cpu", progress=False, on_epoch=lambda e, m: seen.append(e))
    assert isinstance(model, CNNClassifier) and seen == list(range(history["epochs_run"]))
    assert history["val_auroc"][history["best_epoch"]] > 0.8
    path = save_classifier(model, tmp_path / "cnn.pt")
    assert np.allclose(predict_proba(load_classifier(path), Xv), predict_proba(model, Xv))


# --------------------------------------------------------------------------- per-sample loss weights

def test_weighted_train_loss_is_the_weighted_mean_and_validation_is_unweighted():
    """lr 1e-12 keeps the initial model (0 is refused: it cannot train), so epoch 0's losses are plain sums over
    that model's per-stay BCE."""
    X, y = toy(90, 0)
    Xv, yv = toy(50, 1)
    w = np.random.default_rng(2).choice([0.0, 0.25, 0.5, 1.0], size=len(y))
    train = TrainConfig(max_epochs=1, batch_size=32, lr=1e-12, pos_weight=2.0, monitor="loss")
    model, hist = train_classifier(X, y, Xv, yv, SMALL, train, seed=3, progress=False, sample_weight=w)

    def bce(p, y):  # per stay, positives weighing pos_weight
        p = p.astype(np.float64)
        return -(2.0 * y * np.log(p) + (1 - y) * np.log(1 - p))

    assert hist["train_loss"][0] == pytest.approx((w * bce(predict_proba(model, X), y)).sum() / w.sum(), rel=1e-5)
    assert hist["val_loss"][0] == pytest.approx(bce(predict_proba(model, Xv), yv).mean(), rel=1e-5)


@pytest.mark.parametrize("pos_weight", [None, 2.0])
def test_weighted_batch_loss_equals_a_loop_over_stays(pos_weight):
    """The training step's loss Σ w_i ℓ_i / Σ w_i, ℓ_i each stay's BCE alone (its gradient follows by autograd);
    a batch weighing 0 in all has loss 0, not NaN. (Adam's scale invariance hides a wrong normaliser in the
    end-to-end tests, so it is pinned here.)"""
    from tardiff.classifier import _weighted_mean_bce

    torch.manual_seed(0)
    logits, y = torch.randn(9), torch.randint(0, 2, (9,)).float()
    w = torch.tensor([0.0, 0.25, 0.5, 1.0, 1.0, 0.25, 0.0, 0.5, 1.0])
    pw = None if pos_weight is None else torch.tensor(pos_weight)
    losses = [float(torch.nn.functional.binary_cross_entropy_with_logits(logits[i], y[i], pos_weight=pw))
              for i in range(9)]
    loss, weighted_sum = _weighted_mean_bce(logits, y, w, pw)
    assert float(weighted_sum) == pytest.approx(sum(float(w[i]) * losses[i] for i in range(9)), rel=1e-6)
    assert float(loss) == pytest.approx(float(weighted_sum) / float(w.sum()), rel=1e-6)
    assert float(_weighted_mean_bce(logits, y, torch.zeros(9), pw)[0]) == 0.0


def test_zero_weight_stays_are_ignored():
    """One batch per epoch (so the batches hold the same stays) and no dropout: weighing stays 0 trains the model
    that never saw them, up to float rounding; the others' weights only matter relative to each other."""
    X, y = toy(60, 0)
    Xv, yv = toy(40, 1)
    w = np.random.default_rng(4).choice([0.25, 0.5, 1.0], size=len(y))
    w[:12] = 0.0
    train = TrainConfig(max_epochs=4, patience=10, batch_size=128, lr=1e-2, pos_weight=1.5, monitor="loss")
    weighted, h_weighted = train_classifier(X, y, Xv, yv, SMALL, train, seed=1, progress=False, sample_weight=w)
    dropped, h_dropped = train_classifier(X[12:], y[12:], Xv, yv, SMALL, train, seed=1, progress=False,
                                          sample_weight=3 * w[12:])
    np.testing.assert_allclose(h_weighted["val_loss"], h_dropped["val_loss"], rtol=1e-5)
    np.testing.assert_allclose(predict_proba(weighted, Xv), predict_proba(dropped, Xv), atol=1e-5)
    unweighted, _ = train_classifier(X, y, Xv, yv, SMALL, train, seed=1, progress=False)
    assert np.abs(predict_proba(unweighted, Xv) - predict_proba(weighted, Xv)).max() > 1e-3, "weights had no effect"


@pytest.mark.parametrize("case, message", [("column", "shape"), ("length", "shape"), ("nan", "NaN"),
                                           ("negative", ">= 0"), ("zeros", "all zero"), ("text", "numbers")])
def test_bad_sample_weight_is_refused_by_name(case, message):
    X, y = toy(40, 0)
    w = {"column": np.ones((40, 1)), "length": np.ones(39), "nan": np.r_[np.nan, np.ones(39)],
         "negative": np.r_[-1.0, np.ones(39)], "zeros": np.zeros(40), "text": ["a"] * 40}[case]
    with pytest.raises(ValueError, match=f"sample_weight.*{message}"):
        train_classifier(X, y, X, y, SMALL, TrainConfig(max_epochs=1), progress=False, sample_weight=w)
