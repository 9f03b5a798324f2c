"""One model space (stays.ModelSpace) and one (X, y) check (stays.check_xy) for every path into the models."""
import numpy as np
import pytest

from tardiff import api, pipeline, real_data, stays
from tardiff.config import get_profile


def test_round_trip_where_not_clipped_and_the_clip_holds():
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(40, 6, 3)) * [2.0, 30.0, 0.5] + [80.0, 120.0, 37.0]).astype(np.float32)
    X[3, 2, 1] = 1e4  # far beyond 5 sd of the others: clipped
    space = stays.ModelSpace.fit(X[:30])
    Z = space.to_model(X)
    assert Z.dtype == np.float32 and np.abs(Z).max() == 5.0
    inside = np.abs((X.astype(np.float64) - space.mean) / space.sd) < space.clip
    assert not inside[3, 2, 1] and inside.sum() == X.size - 1
    np.testing.assert_allclose(space.to_physical(Z)[inside], X[inside], rtol=1e-6, atol=1e-5)
    again = stays.ModelSpace.from_state(space.state())
    np.testing.assert_array_equal(again.to_model(X), Z)


def test_a_constant_channel_is_zero_not_a_division_by_almost_zero():
    X = np.random.default_rng(1).normal(size=(10, 4, 2)).astype(np.float32)
    X[..., 1] = 7.0
    space = stays.ModelSpace.fit(X)
    assert space.sd[1] == 1.0
    Z = space.to_model(X)
    assert np.isfinite(Z).all() and (Z[..., 1] == 0).all()


def reference_model_input(X_raw_train, X_raw, clip):
    """Slow Preprocessor: per stay and channel a Python loop for forward fill then the training median, log1p
    for LOG_CHANNELS, z-score with the observed training values (sd < 1e-6 -> 1), clip."""
    n_train, t, f = X_raw_train.shape
    log = [c in stays.LOG_CHANNELS for c in stays.CHANNELS]

    def tr(v, j):
        return float(np.log1p(max(v, 0.0))) if log[j] else float(v)

    out = np.zeros(X_raw.shape)
    for j in range(f):
        seen = [float(X_raw_train[i, h, j]) for i in range(n_train) for h in range(t)
                if not np.isnan(X_raw_train[i, h, j])]
        median = float(np.median(seen))
        values = [tr(v, j) for v in seen]
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        sd = sd if sd > 1e-6 else 1.0
        for i in range(len(X_raw)):
            last = np.nan
            for h in range(t):
                if not np.isnan(X_raw[i, h, j]):
                    last = float(X_raw[i, h, j])
                value = median if np.isnan(last) else last
                out[i, h, j] = min(max((tr(value, j) - mean) / sd, -clip), clip)
    return out


def test_preprocessor_output_matches_a_slow_reference():
    rng = np.random.default_rng(2)
    X_raw = (rng.normal(size=(4, 5, 8)) * 5 + [80, 120, 60, 80, 18, 37, 97, 60]).astype(np.float32)
    urine = stays.channel_index("Urine")
    X_raw[:, :, urine] = rng.choice([0.0, 20.0, 60.0, 150.0], size=(4, 5))
    X_raw[0, :2, 0] = np.nan          # leading gap: the training median
    X_raw[1, 2:4, 4] = np.nan         # gap after an observation: carried forward
    X_raw[2, :, 5] = 37.0             # constant temperature in the training rows: sd 1
    X_raw[3, 1, 1] = 400.0            # a held-out stay far outside the training range: clipped
    X_raw[3, 3, urine] = 4000.0
    prep = stays.Preprocessor.fit(X_raw[:3], clip=2.0)
    expected = reference_model_input(X_raw[:3], X_raw, clip=2.0)
    got = prep.to_model(X_raw)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert got[3, 1, 1] == 2.0
    assert set(prep.state()) == {"prep_median", "prep_mean", "prep_sd", "prep_clip"}
    again = stays.Preprocessor.from_state(prep.state())
    np.testing.assert_array_equal(again.to_model(X_raw), got)
    assert again.clip == 2.0


def _user_file(path, n=120, seed=0, **overrides):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    X = (rng.normal(size=(n, 6, 3)) * [3.0, 10.0, 0.5] + [70.0, 110.0, 37.0] + y[:, None, None]).astype(np.float32)
    X[:10, 0, 1] = 1e4  # outliers in most splits: the clip at ±5 applies on both paths
    np.savez(path, **{"X": X, "y": y, **overrides})
    return path, X, y


def test_a_user_file_lands_in_the_same_model_space_on_both_paths(tmp_path, monkeypatch):
    path, X, y = _user_file(tmp_path / "mine.npz")
    # reproduce --dataset FILE.npz: real_data, fitted on its training rows
    real = real_data.load_real(path, "label", get_profile("smoke"))
    train = real_data._load_single(path)[0]["split"] == "train"
    np.testing.assert_array_equal(real.X_train, stays.ModelSpace.fit(X[train]).to_model(X[train]))
    np.testing.assert_array_equal(real.y_train, y[train])
    assert np.abs(real.X_train).max() == 5.0
    # tardiff generate: load_xy then TarDiff.fit, with its training rows; the training itself is not the claim
    for step in ("train_guide_classifier", "build_references", "train_generative_models"):
        monkeypatch.setattr(pipeline, step, lambda *args, **kwargs: None)
    X_api, y_api = api.load_xy(path)
    api.TarDiff("smoke").fit(X_api, y_api, models_dir=tmp_path / "m", methods=["timevae"], progress=False)
    api_train = ~stays.stratified_split(y, 0.1, seed=0)
    space = stays.ModelSpace.fit(X[api_train])
    with np.load(tmp_path / "m" / "tardiff_data.npz") as saved:
        np.testing.assert_array_equal(saved["X_train"], space.to_model(X[api_train]))
        np.testing.assert_array_equal(saved["mean"], space.mean)
        np.testing.assert_array_equal(saved["sd"], space.sd)
        assert float(saved["clip"]) == 5.0


def test_a_stays_file_lands_in_its_own_preprocessing_on_both_paths(tmp_path, monkeypatch, fixture_dir):
    """A stays file (tardiff extract, data_preprocess/): the batch reads the file's model-space X;
    `generate` fits with the file's own Preprocessor (preprocessor_of), so every stay has the same values on
    both paths, and samples map back through it (urine through expm1)."""
    from tardiff import data

    path = data.extract(fixture_dir, tmp_path / "data")["set-a"]
    arrays = stays.load_stays(path)
    real = real_data.load_real(tmp_path / "data", "mortality", get_profile("smoke"))  # set-a train/val, set-b test
    for step in ("train_guide_classifier", "build_references", "train_generative_models"):
        monkeypatch.setattr(pipeline, step, lambda *args, **kwargs: None)
    X_api, y_api = api.load_xy(path)
    prep = api.preprocessor_of(path)
    model = api.TarDiff("smoke").fit(X_api, y_api, models_dir=tmp_path / "m", methods=["timevae"], progress=False,
                                     preprocessor=prep)
    is_val = stays.stratified_split(y_api, 0.1, seed=0)
    Z_api = np.empty_like(arrays["X"][arrays["y_mortality"] >= 0])
    Z_api[~is_val], Z_api[is_val] = model._cohort.X_train, model._cohort.X_val
    known = arrays["y_mortality"] >= 0
    rows = np.flatnonzero(known & (arrays["split"] == "train"))              # --dataset's training stays
    np.testing.assert_array_equal(real.X_train, arrays["X"][rows])
    np.testing.assert_array_equal(Z_api[np.searchsorted(np.flatnonzero(known), rows)], real.X_train)
    again = api.TarDiff.load(tmp_path / "m")
    assert isinstance(api._space(again.scale), stays.Preprocessor)
    np.testing.assert_allclose(api._space(again.scale).to_physical(Z_api[:5]), prep.to_physical(Z_api[:5]))
    assert api.preprocessor_of(_user_file(tmp_path / "mine.npz")[0]) is None


def test_a_models_folder_saved_before_the_clip_was_stored_loads_with_clip_5(tmp_path, monkeypatch):
    _, X, y = _user_file(tmp_path / "mine.npz")
    for step in ("train_guide_classifier", "build_references", "train_generative_models"):
        monkeypatch.setattr(pipeline, step, lambda *args, **kwargs: None)
    api.TarDiff("smoke").fit(X, y, models_dir=tmp_path / "m", methods=["timevae"], progress=False)
    data_file = tmp_path / "m" / "tardiff_data.npz"
    with np.load(data_file) as saved:
        arrays = {k: saved[k] for k in saved.files if k != "clip"}
    np.savez_compressed(data_file, **arrays)
    loaded = api.TarDiff.load(tmp_path / "m")
    assert loaded.scale["clip"] == 5.0
    np.testing.assert_array_equal(loaded.scale["mean"], arrays["mean"])


@pytest.mark.parametrize("overrides, message", [
    ({"X": np.full((120, 6, 3), np.nan, np.float32)}, "NaN"),
    ({"X": np.zeros((120, 6), np.float32)}, "(N, T, F)"),
    ({"y": np.zeros(7, np.int64)}, "shape (120,)"),
    ({"y": np.full(120, 2)}, "0/1 labels"),
])
def test_bad_user_files_raise_one_error_naming_the_file_on_both_paths(tmp_path, overrides, message):
    path, _, _ = _user_file(tmp_path / "bad.npz", **overrides)
    for load in (lambda: real_data.load_real(path, "label", get_profile("smoke")), lambda: api.load_xy(path)):
        with pytest.raises(stays.StayFormatError, match="bad.npz") as error:
            load()
        assert message in str(error.value)
    assert issubclass(stays.StayFormatError, ValueError)  # `tardiff generate` and older callers catch ValueError
