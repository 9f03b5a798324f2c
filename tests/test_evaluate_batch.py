"""Notebook 05's evaluation: its TSTR against a slow reference, the selected candidate's one alias, and every
evaluation size a profile setting. A stand-in downstream model keeps it fast; the path is the batch's."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tardiff import evaluate as ev
from tardiff import fidelity, pipeline
from tardiff.config import PROFILES, get_profile, parse_overrides, with_overrides
from tardiff.methods import SELECTED
from tardiff.real_data import RealData

T, F, N_SEEDS = 6, 3, 3
PROFILE = get_profile("smoke")


def stays(n, seed, signal=1.0):
    """(n, T, F) noise, a third of them label 1 with channel 0 raised by `signal` (0: labels carry nothing)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(np.int64)
    X = rng.normal(size=(n, T, F)).astype(np.float32)
    X[:, :, 0] += signal * y[:, None]
    return X, y


REAL = RealData(*stays(40, 1), *stays(21, 2), *stays(30, 3), task="mortality")
# two candidates, the better one second: taking the first candidate would show
SETS = {"ddpm": stays(30, 10, 0.0), "cfg": stays(30, 11), "tardiff_dot": stays(30, 12, 0.2),
        "tardiff_cos": stays(24, 13, 3.0)}


class Linear:
    def __init__(self, w):
        self.w = w


def fake_train(X, y, X_val, y_val, config=None, train=None, seed=0, device=None, progress=False):
    """Stand-in downstream fit: class-mean difference of the time-mean features, plus noise of its seed."""
    m = X.mean(axis=1)
    return Linear(m[y == 1].mean(0) - m[y == 0].mean(0) + np.random.default_rng(seed).normal(0, 0.5, X.shape[-1])), {}


def fake_predict(model, X, device=None):
    return 1 / (1 + np.exp(-np.asarray(X).mean(axis=1) @ model.w))


def reference(X, y, seeds=range(N_SEEDS)):
    """One model per seed in a Python loop, scored on real test by sklearn: ({column: value}, (n_seeds, N))."""
    probas = np.stack([fake_predict(fake_train(X, y, REAL.X_val, REAL.y_val, seed=s)[0], REAL.X_test) for s in seeds])
    auroc = [roc_auc_score(REAL.y_test, p) for p in probas]
    auprc = [average_precision_score(REAL.y_test, p) for p in probas]
    return {"auroc_mean": np.mean(auroc), "auroc_sd": np.std(auroc, ddof=1), "auprc_mean": np.mean(auprc),
            "auprc_sd": np.std(auprc, ddof=1), "n_seeds": N_SEEDS}, probas


def batch(fits=None, predictions=None):
    """What notebook 05 holds after the selection (fit_all, selection_table), with the stand-in model; `fits`
    and `predictions` record each fit and each test-set prediction."""
    fits, predictions = [] if fits is None else fits, [] if predictions is None else predictions

    def train_fn(X, y, *args, **kw):
        fits.append(len(y))
        return fake_train(X, y, *args, **kw)

    def predict_fn(model, X, device=None):
        if X is REAL.X_test:
            predictions.append(model)
        return fake_predict(model, X)

    config = ev.EvalConfig(classifier=None, train=None, n_seeds=N_SEEDS, n_boot=PROFILE.bootstrap, device="cpu",
                           train_fn=train_fn, predict_fn=predict_fn)
    models = ev.fit_sets({"real": (REAL.X_train, REAL.y_train), **SETS}, REAL, config)
    fitted = pipeline.Fitted(REAL, SETS, config, models)
    return fitted, pipeline.selection_table(fitted)


def test_batch_tstr_and_paired_differences_equal_a_loop_over_seeds_scored_by_sklearn():
    fitted, selection = batch()
    chosen = pipeline.selected_method(selection, "mortality")
    assert chosen == "tardiff_cos"
    tstr, paired = pipeline.tstr_tables(fitted, selection, PROFILE, progress=False)
    want = {name: reference(X, y) for name, (X, y) in {"real": (REAL.X_train, REAL.y_train), **SETS,
                                                         SELECTED: SETS[chosen]}.items()}
    for arch in ("gru", "cnn"):  # the stand-in trains both downstream architectures
        rows = tstr[tstr["downstream"] == arch].set_index("method")
        assert list(rows.index) == ["real", "ddpm", "cfg", SELECTED, "tardiff_dot", "tardiff_cos"]
        for name, (columns, _) in want.items():
            for column, value in columns.items():
                assert rows.loc[name, column] == pytest.approx(value, abs=1e-12), (arch, name, column)
    assert sorted(set(zip(paired["method"], paired["baseline"]))) == [("tardiff", "cfg"), ("tardiff_cos", "cfg"),
                                                                      ("tardiff_dot", "cfg")]
    for row in paired.itertuples():
        score = roc_auc_score if row.metric == "auroc" else average_precision_score
        diffs = [score(REAL.y_test, p) - score(REAL.y_test, q) for p, q in zip(want[row.method][1],
                                                                               want[row.baseline][1])]
        assert row.diff == pytest.approx(np.mean(diffs), abs=1e-12)


def test_evaluate_tstr_is_the_same_path():
    config = batch()[0].config
    table = ev.tstr(SETS, REAL, "mortality", config).set_index("method")
    for name, (X, y) in {"real": (REAL.X_train, REAL.y_train), **SETS}.items():
        columns, _ = reference(X, y)
        assert table.loc[name, list(columns)].tolist() == pytest.approx(list(columns.values()), abs=1e-12)
        assert table.loc[name, "n_train"] == len(y)


def test_selected_candidate_is_the_chosen_models_not_a_refit():
    fits, predictions = [], []
    fitted, selection = batch(fits, predictions)
    chosen = pipeline.selected_method(selection, "mortality")
    shown = pipeline.reported(fitted, selection)
    assert list(shown.sets)[0] == SELECTED and SELECTED not in fitted.sets
    assert shown.sets[SELECTED] is fitted.sets[chosen] and shown.models[SELECTED] is fitted.models[chosen]
    fits.clear()
    tstr, _ = pipeline.tstr_tables(fitted, selection, PROFILE, progress=False)
    assert len(fits) == (1 + len(SETS)) * N_SEEDS  # the CNN on real and each set; nothing fitted for the alias
    assert len(predictions) == 2 * (1 + len(SETS)) * N_SEEDS  # each model predicts the test set once
    numbers = list(ev.UTILITY_COLUMNS[2:]) + ["auroc_ci_low", "auroc_ci_high", "n_synthetic"]
    for arch in ("gru", "cnn"):
        rows = tstr[tstr["downstream"] == arch].set_index("method")
        assert rows.loc[SELECTED, numbers].tolist() == rows.loc[chosen, numbers].tolist()
        assert (rows.loc[SELECTED, "role"], rows.loc[SELECTED, "selected_from"]) == ("selected", chosen)
    frame = pd.DataFrame({"method": ["cfg", chosen], "score": [1.0, 2.0]})
    assert pipeline.with_selected(frame, chosen).values.tolist() == [[SELECTED, 2.0], ["cfg", 1.0], [chosen, 2.0]]


def test_every_evaluation_size_is_a_profile_setting():
    profile = with_overrides(PROFILE, **parse_overrides([
        "fidelity_hidden=7", "fidelity_epochs=4", "fidelity_batch_size=16", "fidelity_lr=0.01", "fidelity_max_lag=3",
        "eval_classifier.hidden=5", "eval_train.lr=0.05", "eval_train.batch_size=8", "n_seeds=4", "bootstrap=30",
        "ci_level=0.9"]))
    fid = fidelity.FidelityConfig.from_profile(profile, seed=2)
    assert (fid.hidden, fid.epochs, fid.batch_size, fid.lr, fid.max_lag, fid.seed) == (7, 4, 16, 0.01, 3, 2)
    config = ev.EvalConfig.from_profile(profile)
    assert (config.classifier.hidden, config.train.lr, config.train.batch_size, config.n_seeds, config.n_boot,
            config.ci_level) == (5, 0.05, 8, 4, 30, 0.9)


def test_bare_configs_are_the_default_profile_and_sizes_are_unchanged():
    default = get_profile("default")
    assert ev.EvalConfig() == ev.EvalConfig.from_profile(default)
    assert fidelity.FidelityConfig() == fidelity.FidelityConfig.from_profile(default)
    for name, epochs in (("smoke", 2), ("default", 15), ("paper", 15)):  # the sizes the tables were made with
        fid = fidelity.FidelityConfig.from_profile(get_profile(name))
        assert (fid.hidden, fid.epochs, fid.batch_size, fid.lr, fid.max_lag) == (32, epochs, 128, 1e-3, 5)
    assert set(PROFILES) == {"smoke", "default", "paper"}


def test_selection_marks_only_the_best_candidate_never_a_baseline_or_an_ablation():
    """A hand-made table: a baseline and an ablation as good as the best candidate, a worse and a useless
    candidate; only the best candidate is selected, and exactly one row per task is."""
    config = batch()[0].config
    weights = {"real": [1, 0, 0], "cfg": [1, 0, 0], "tardiff_original": [1, 0, 0], "tardiff_dot": [1, 3, 3],
               "tardiff_hinv": [-1, 0, 0], "tardiff_cos": [1, 0, 0]}
    models = {name: [Linear(np.array(w, float))] * N_SEEDS for name, w in weights.items()}
    sets = {name: SETS["cfg"] for name in weights if name != "real"}
    selection = pipeline.selection_table(pipeline.Fitted(REAL, sets, config, models))
    assert selection["selected"].sum() == 1
    assert pipeline.selected_method(selection, "mortality") == "tardiff_cos"
    criterion = selection.set_index("method")["criterion"]
    assert criterion["cfg"] == criterion["tardiff_original"] == criterion["tardiff_cos"] > criterion["tardiff_dot"]


def test_augmentation_pairs_each_seed_with_real_only_and_chooses_on_validation(tmp_path):
    """fit_augmented / augment_selection / augment_tables against a loop over settings and seeds scored by
    sklearn: seed s of real + synthetic paired with seed s of real only, the choice made on validation."""
    from dataclasses import replace

    from tardiff import augment

    def train_fn(X, y, X_val, y_val, sample_weight=None, **kw):
        return fake_train(X, y, X_val, y_val, **kw)

    fitted, selection = batch()
    config = replace(fitted.config, train_fn=train_fn, predict_fn=fake_predict)
    fitted = pipeline.Fitted(REAL, SETS, config, ev.fit_sets({"real": (REAL.X_train, REAL.y_train), **SETS}, REAL,
                                                             config))
    profile = with_overrides(PROFILE, augment_sources=("cfg", SELECTED), augment_alphas=(0.25, 0.5),
                             augment_weights=(0.5, 1.0), augment_mix_alpha=0.25, augment_realism=0.0,
                             augment_pool=0, augment_downstream=("gru",))
    augmented = pipeline.fit_augmented(fitted, selection, profile, tmp_path, tmp_path, progress=False)
    names = [m.name for m in augmented.settings]
    assert names == ["cfg@0.25", "cfg@0.5", "tardiff@0.25", "tardiff@0.5", "cfg@0.25 w0.5", "cfg@0.25 balanced",
                     "tardiff@0.25 w0.5", "tardiff@0.25 balanced", "pool@0.25", "pool@0.5"]
    pools = {"cfg": SETS["cfg"], SELECTED: SETS[pipeline.selected_method(selection, "mortality")]}

    def gains(X_eval, y_eval):
        real_only = [fake_predict(fake_train(REAL.X_train, REAL.y_train, None, None, seed=s)[0], X_eval)
                     for s in range(N_SEEDS)]
        out = {}
        for mix in augmented.settings:
            with_syn = [fake_predict(fake_train(*augment.training_set(REAL.X_train, REAL.y_train, pools, mix, s)[:2],
                                                None, None, seed=s)[0], X_eval) for s in range(N_SEEDS)]
            out[mix.name] = {score.__name__: np.mean([score(y_eval, p) - score(y_eval, q)
                                                      for p, q in zip(with_syn, real_only)])
                             for score in (roc_auc_score, average_precision_score)}
        return out

    choice = pipeline.augment_selection(augmented, profile)
    val = gains(REAL.X_val, REAL.y_val)
    criterion = {name: g["roc_auc_score"] + g["average_precision_score"] for name, g in val.items()}
    assert choice.set_index("setting")["criterion"].to_dict() == pytest.approx(criterion, abs=1e-12)
    assert choice[choice["selected"]]["setting"].tolist() == [max(criterion, key=criterion.get)]
    paired, tsrtr = pipeline.augment_tables(augmented, choice, profile)
    test = gains(REAL.X_test, REAL.y_test)
    for row in paired[paired["setting"] != augment.SELECTED].itertuples():
        key = "roc_auc_score" if row.metric == "auroc" else "average_precision_score"
        assert row.diff == pytest.approx(test[row.setting][key], abs=1e-12)
        assert row.ci_low <= row.diff <= row.ci_high
    pick = paired[paired["setting"] == augment.SELECTED]
    assert set(pick["selected_from"]) == {max(criterion, key=criterion.get)} and len(pick) == 2
    assert tsrtr[["method", "alpha"]].values.tolist() == [["real", 0.0], ["cfg", 0.25], ["cfg", 0.5],
                                                          [SELECTED, 0.25], [SELECTED, 0.5], ["pool", 0.25],
                                                          ["pool", 0.5]]


def test_the_paired_intervals_take_the_profile_ci_level():
    fitted, selection = batch()
    widths = {}
    for level in (0.5, 0.95):
        _, paired = pipeline.tstr_tables(fitted, selection, with_overrides(PROFILE, ci_level=level), progress=False)
        widths[level] = (paired["ci_high"] - paired["ci_low"]).to_numpy()
    assert (widths[0.5] < widths[0.95]).all()
