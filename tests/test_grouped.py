"""Grouped downstream training (tardiff.grouped) equals training the members one by one."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from tardiff import evaluate as ev
from tardiff.classifier import ClassifierConfig, RNNClassifier, TrainConfig, predict_proba, train_classifier
from tardiff import grouped
from tardiff.grouped import _backward, _forward, _stacked, train_group

CONFIG = ClassifierConfig(hidden=8, layers=1, dropout=0.2)  # dropout: each member's own stream


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def stays(n, seed, signal=0.6):
    """(n, 10, 3) stays whose label shifts channel 0 (weakly: early stopping fires at different epochs)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 10, 3)).astype(np.float32)
    X[:, :, 0] += signal * y[:, None]
    return X, y


@pytest.mark.parametrize("bidirectional", [True, False])
def test_gradients_equal_autograd_through_nn_gru(bidirectional):
    torch.manual_seed(0)
    config = replace(CONFIG, bidirectional=bidirectional)
    models = [RNNClassifier(3, config) for _ in range(3)]
    x = torch.randn(3, 5, 7, 3)                                   # (members, B, T, F)
    params = _stacked(models, "cpu")
    final, saved = _forward(params, x, 2 if bidirectional else 1, keep=True)
    upstream = torch.randn_like(final)
    grads = _backward(params, saved, upstream, 2 if bidirectional else 1)
    suffixes = ["", "_reverse"] if bidirectional else [""]
    for i, model in enumerate(models):
        features = model.features(x[i])
        assert torch.allclose(features, final[i], atol=1e-6)
        (features * upstream[i]).sum().backward()
        for ours, theirs in (("W_ih", "weight_ih_l0"), ("W_hh", "weight_hh_l0"), ("b_ih", "bias_ih_l0"),
                             ("b_hh", "bias_hh_l0")):
            for d, suffix in enumerate(suffixes):
                expected = getattr(model.rnn, theirs + suffix).grad
                assert torch.allclose(grads[ours][i * len(suffixes) + d], expected, atol=1e-5), (ours, suffix)


def test_grouped_training_equals_sequential_training():
    """Several members, seeds, two training-set sizes (two groups) and early stopping at different epochs."""
    X_val, y_val = stays(120, 99)
    sets = [stays(200, 1), stays(200, 2), stays(200, 2), stays(150, 3), stays(200, 4)]
    seeds = [0, 1, 2, 3, 0]
    train = TrainConfig(max_epochs=12, patience=2, batch_size=64, lr=2e-2, monitor="loss")
    grouped = train_group(sets, X_val, y_val, CONFIG, train, seeds, max_members=3)
    epochs = set()
    for (X, y), seed, (model, history) in zip(sets, seeds, grouped):
        ref, ref_history = train_classifier(X, y, X_val, y_val, CONFIG, train, seed=seed, progress=False)
        assert history["epochs_run"] == ref_history["epochs_run"]
        assert history["best_epoch"] == ref_history["best_epoch"]
        np.testing.assert_allclose(history["val_loss"], ref_history["val_loss"], atol=1e-5)
        np.testing.assert_allclose(predict_proba(model, X_val), predict_proba(ref, X_val), atol=1e-5)
        epochs.add(history["epochs_run"])
    assert len(epochs) > 1, "early stopping should fire at different epochs, or the test checks less than it says"


def test_grouped_evaluation_equals_sequential_evaluation():
    X_train, y_train = stays(200, 5)
    X_val, y_val = stays(100, 6)
    X_test, y_test = stays(150, 7)

    class Real:
        pass

    real = Real()
    real.X_train, real.y_train, real.X_val, real.y_val, real.X_test, real.y_test = (X_train, y_train, X_val, y_val,
                                                                                    X_test, y_test)
    real.n_excluded = 0
    config = ev.EvalConfig(classifier=CONFIG, train=TrainConfig(max_epochs=3, batch_size=64), n_seeds=2, n_boot=20)
    synthetic = {"a": stays(200, 8), "b": stays(200, 9)}
    fast = ev.tsrtr(synthetic, real, "mortality", alphas=(0.25, 0.5), config=config)
    slow = ev.tsrtr(synthetic, real, "mortality", alphas=(0.25, 0.5), config=replace(config, grouped=False))
    for column in ("auroc_mean", "auprc_mean", "auroc_sd"):
        np.testing.assert_allclose(fast[column], slow[column], atol=1e-4)


def test_unsupported_classifier_is_refused():
    X, y = stays(50, 0)
    with pytest.raises(ValueError, match="1-layer GRU"):
        train_group([(X, y)], X, y, ClassifierConfig(hidden=8, layers=2))


def test_fixed_epoch_discriminators_equal_one_by_one():
    """fidelity's discriminators trained as one group give the logits of each trained alone (_fit)."""
    from torch import nn

    from tardiff import fidelity

    rng = np.random.default_rng(4)
    real = rng.normal(size=(90, 10, 3)).astype(np.float32)
    syns = [real + 0.5 * rng.normal(size=real.shape).astype(np.float32) for _ in range(2)]
    config = fidelity.FidelityConfig(hidden=6, epochs=3, batch_size=32, lr=1e-2, device="cpu")
    jobs = [(real, syn, seed) for syn in syns for seed in (0, 1, 2)]
    data = [fidelity._discriminator_data(*job) for job in jobs]
    orders = [lambda g=np.random.default_rng(seed), n=len(d[1]): g.permutation(n) for (_, _, seed), d in zip(jobs, data)]
    together = grouped.fixed_epoch_logits([(d[0], d[1]) for d in data], [d[2] for d in data], hidden=6, epochs=3,
                                          batch_size=32, lr=1e-2, seeds=[j[2] for j in jobs], orders=orders,
                                          max_members=4)
    for (_, _, seed), d, z in zip(jobs, data, together):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = fidelity._PostHocGRU(3, 6, 1, per_step=False)
            fidelity._fit(model, d[0], d[1], nn.functional.binary_cross_entropy_with_logits,
                          replace(config, seed=seed), "cpu")
        alone = torch.as_tensor(fidelity._apply(model, d[2], "cpu"))
        torch.testing.assert_close(z, alone, rtol=1e-5, atol=1e-5)


def test_fixed_epoch_logits_refuses_bad_input():
    X, y = np.zeros((8, 4, 2), np.float32), np.array([0, 1] * 4)
    order = [lambda: np.arange(8)]
    with pytest.raises(ValueError, match="one X_eval, seed and order per training set"):
        grouped.fixed_epoch_logits([(X, y)], [X], hidden=4, epochs=1, batch_size=4, lr=1e-2, seeds=[0, 1], orders=order)
    bad = X.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"train_sets\[0\] X has 1 NaN"):
        grouped.fixed_epoch_logits([(bad, y)], [X], hidden=4, epochs=1, batch_size=4, lr=1e-2, seeds=[0], orders=order)


def test_fixed_epoch_next_step_equals_one_by_one():
    """The predictive-score regressors trained as groups predict what fidelity._fit's one-by-one models predict,
    and fidelity.predictive_scores_many equals predictive_score set by set."""
    from torch import nn

    from tardiff import fidelity

    rng = np.random.default_rng(5)
    real = rng.normal(size=(70, 9, 3)).astype(np.float32)
    sets = [real[:60] + s * rng.normal(size=(60, 9, 3)).astype(np.float32) for s in (0.2, 0.5, 1.0)]
    sets.append(rng.normal(size=(50, 9, 3)).astype(np.float32))  # another size: its own group
    config = fidelity.FidelityConfig(hidden=5, epochs=3, batch_size=16, lr=1e-2, seed=2, device="cpu")
    orders = [lambda g=np.random.default_rng(2), n=len(X): g.permutation(n) for X in sets]
    together = grouped.fixed_epoch_next_step(sets, real, hidden=5, epochs=3, batch_size=16, lr=1e-2,
                                             seeds=[2] * len(sets), orders=orders, max_members=2)
    for X, pred in zip(sets, together):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(2)
            model = fidelity._PostHocGRU(3, 5, 3, per_step=True)
            fidelity._fit(model, X[:, :-1], X[:, 1:], nn.functional.l1_loss, config, "cpu")
        alone = torch.as_tensor(fidelity._apply(model, real[:, :-1], "cpu"))
        assert pred.shape == alone.shape == (70, 8, 3)
        torch.testing.assert_close(pred, alone, rtol=1e-5, atol=1e-5)
    many = fidelity.predictive_scores_many(sets, real, config)
    np.testing.assert_allclose(many, [fidelity.predictive_score(X, real, config) for X in sets], rtol=1e-5)
    with pytest.raises(ValueError, match=r"train_sets\[1\] has shape"):
        grouped.fixed_epoch_next_step([real, real[:, :4]], real, hidden=5, epochs=1, batch_size=16, lr=1e-2,
                                      seeds=[0, 0], orders=orders[:2])


# --------------------------------------------------------------------------- per-sample loss weights

def weights(n, seed):
    """Augmentation's loss weights (synthetic stays 0.25 / 0.5, real 1) and some 0."""
    return np.random.default_rng(seed).choice([0.0, 0.25, 0.5, 1.0], size=n)


@pytest.mark.parametrize("pos_weight", [None, 2.0])
def test_weighted_bce_grad_equals_autograd_of_a_loop_over_stays(pos_weight):
    """_bce_grad with weights: d(Σ_i w_i ℓ_i / Σ_i w_i)/d logits, each ℓ_i taken alone; a member whose batch
    weighs 0 in all gets no gradient."""
    torch.manual_seed(0)
    logits, y = torch.randn(3, 7, requires_grad=True), torch.randint(0, 2, (3, 7)).float()
    w = torch.as_tensor(weights(21, 0), dtype=torch.float32).reshape(3, 7)
    w[2] = 0.0
    pw = None if pos_weight is None else torch.tensor(pos_weight)
    for m in range(2):
        losses = [torch.nn.functional.binary_cross_entropy_with_logits(logits[m, i], y[m, i], pos_weight=pw)
                  for i in range(7)]
        (sum(w[m, i] * losses[i] for i in range(7)) / w[m].sum()).backward()
    expected = torch.cat([logits.grad[:2], torch.zeros(1, 7)])
    torch.testing.assert_close(grouped._bce_grad(logits.detach(), y, pw, w), expected, rtol=1e-5, atol=1e-7)


def test_weighted_grouped_training_equals_sequential_training():
    """A group of weighted and unweighted members (two sizes, so two groups) equals train_classifier one by one
    with the same sample_weight, train_loss included."""
    X_val, y_val = stays(120, 99)
    sets = [(*stays(200, 1), weights(200, 1)), stays(200, 2), (*stays(150, 3), weights(150, 3)),
            (*stays(200, 4), None)]
    seeds = [0, 1, 2, 3]
    train = TrainConfig(max_epochs=8, patience=2, batch_size=64, lr=2e-2, monitor="loss", pos_weight=1.5)
    together = train_group(sets, X_val, y_val, CONFIG, train, seeds, max_members=3)
    for (X, y, *w), seed, (model, history) in zip(sets, seeds, together):
        ref, ref_history = train_classifier(X, y, X_val, y_val, CONFIG, train, seed=seed, progress=False,
                                            sample_weight=w[0] if w else None)
        assert history["epochs_run"] == ref_history["epochs_run"]
        assert history["best_epoch"] == ref_history["best_epoch"]
        np.testing.assert_allclose(history["train_loss"], ref_history["train_loss"], rtol=1e-5)
        np.testing.assert_allclose(history["val_loss"], ref_history["val_loss"], atol=1e-5)
        np.testing.assert_allclose(predict_proba(model, X_val), predict_proba(ref, X_val), atol=1e-5)


def test_unit_weights_and_unweighted_members_are_bit_for_bit_unweighted():
    """Weights of all 1 train exactly the unweighted model, and a member without weights trains the same in a
    group that holds a weighted one."""
    X_val, y_val = stays(80, 98)
    (X1, y1), (X2, y2) = stays(120, 5), stays(120, 6)
    train = TrainConfig(max_epochs=3, batch_size=32, lr=2e-2, monitor="loss")
    plain = train_group([(X1, y1), (X2, y2)], X_val, y_val, CONFIG, train, [0, 1])
    mixed = train_group([(X1, y1), (X2, y2, np.ones(120))], X_val, y_val, CONFIG, train, [0, 1])
    for (a, history_a), (b, history_b) in zip(plain, mixed):
        for name, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[name]), name
        assert history_a["val_loss"] == history_b["val_loss"]
        np.testing.assert_allclose(history_a["train_loss"], history_b["train_loss"], rtol=1e-6)
    with pytest.raises(ValueError, match=r"train_sets\[1\] sample_weight must be >= 0"):
        train_group([(X1, y1), (X2, y2, -np.ones(120))], X_val, y_val, CONFIG, train, [0, 1])


def test_fit_many_passes_weights_only_to_the_sets_that_have_them():
    """The grouped path and train_classifier one by one get the same weights; a stand-in train_fn sees the
    `sample_weight` keyword only for a weighted set."""
    from types import SimpleNamespace

    X_val, y_val = stays(80, 97)
    real = SimpleNamespace(X_val=X_val, y_val=y_val)
    sets = [(*stays(100, 7), weights(100, 7)), stays(100, 8), (*stays(100, 9), None)]
    config = ev.EvalConfig(classifier=CONFIG, train=TrainConfig(max_epochs=2, batch_size=32), device="cpu")
    fast = ev.fit_many(sets, real, config, [0, 1, 2])
    slow = ev.fit_many(sets, real, replace(config, grouped=False), [0, 1, 2])
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(predict_proba(a, X_val), predict_proba(b, X_val), atol=1e-5)
    seen = []

    def train_fn(X, y, X_val, y_val, **kw):
        seen.append(kw.get("sample_weight"))
        return None, {}

    ev.fit_many(sets, real, replace(config, train_fn=train_fn), [0, 1, 2])
    assert seen[0] is sets[0][2] and seen[1:] == [None, None]
    ev.fit_many(sets[1:], real, replace(config, train_fn=lambda X, y, *a, config, train, seed, device, progress:
                                        (None, {})), [0, 1])  # a stand-in without the keyword
    with pytest.raises(ValueError, match=r"train_sets\[0\] must be \(X, y\) or \(X, y, sample_weight\)"):
        ev.fit_many([(X_val,)], real, config, [0])
