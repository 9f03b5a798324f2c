"""The contract every baseline generator keeps (tardiff.generators), on each one's tiny configuration.

Shapes, seeds, save/load, the label rule, resuming an interrupted fit, and bad input. Each generator's
own distinctive piece is tested against a slow reference in tests/test_generator_<name>.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tardiff.generators import GENERATORS, generator_class, get_generator, load_generator
from tardiff.generators.base import Checkpoint, Scaler, check_xy

NAMES = sorted(GENERATORS)
T, F = 24, 3


def _data(n: int = 96, seed: int = 0):
    """Two labels that differ in level, so a label's model sees only its own stays."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(np.int64)  # a third are label 1
    X = rng.normal(size=(n, T, F)).astype(np.float32) + 2.0 * y[:, None, None]
    return X, y


def _tiny(name: str):
    return get_generator(name, generator_class(name).config_class.tiny())


class _Fitted(dict):
    """Each generator fitted once, on first use, on the labelled data (tiny configuration, one thread)."""

    def __missing__(self, name):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self[name] = _tiny(name).fit(*_data(), seed=0, progress=False)
        finally:
            torch.set_num_threads(threads)
        return self[name]


@pytest.fixture(scope="module")
def fitted():
    return _Fitted()


@pytest.mark.parametrize("name", NAMES)
def test_shapes_labels_and_seeds(fitted, name):
    gen = fitted[name]
    wanted = np.array([1, 0, 0, 1, 1, 0, 1])
    S = gen.sample(wanted, seed=5, progress=False)
    assert S.shape == (len(wanted), T, F) and S.dtype == np.float32 and np.isfinite(S).all()
    assert np.array_equal(S, gen.sample(wanted, seed=5, progress=False))      # same seed, same stays
    assert not np.allclose(S, gen.sample(wanted, seed=6, progress=False))     # another seed, other stays
    assert gen.sample(np.zeros(0, np.int64), seed=5, progress=False).shape == (0, T, F)
    # the label rule: per-label models for the unconditional ones, one conditioned model for the others
    assert set(gen.parts) == ({None} if gen.native_labels else {0, 1})


@pytest.mark.parametrize("name", NAMES)
def test_label_count_honoured_and_order_kept(fitted, name):
    """Stay i is generated for label y[i]: the samples of one label do not depend on the others asked for."""
    gen = fitted[name]
    if gen.native_labels:
        pytest.skip("one conditioned model draws all labels together")
    mixed = np.array([1, 0, 1, 1, 0, 0, 0, 1])
    S = gen.sample(mixed, seed=2, progress=False)
    alone = gen.sample(np.ones(4, np.int64), seed=2, progress=False)
    np.testing.assert_array_equal(S[mixed == 1], alone)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(fitted, name, tmp_path):
    gen = fitted[name]
    gen.save(tmp_path / name)
    assert (tmp_path / name / "manifest.json").exists()
    back = load_generator(tmp_path / name)
    wanted = np.array([0, 1, 1, 0])
    np.testing.assert_array_equal(back.sample(wanted, seed=1, progress=False),
                                  gen.sample(wanted, seed=1, progress=False))
    assert back.config == gen.config


@pytest.mark.parametrize("name", NAMES)
def test_fit_is_seeded(name, one_thread):
    X, y = _data(48)
    a = _tiny(name).fit(X, y, seed=3, progress=False).sample(np.array([0, 1]), seed=0, progress=False)
    b = _tiny(name).fit(X, y, seed=3, progress=False).sample(np.array([0, 1]), seed=0, progress=False)
    np.testing.assert_array_equal(a, b)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("name", NAMES)
def test_interrupted_fit_resumes_to_the_same_model(name, tmp_path, monkeypatch, one_thread):
    """A fit killed after its first checkpoint, rerun on the same folder, ends where an uninterrupted one does."""
    X, _ = _data(48)
    straight = _tiny(name).fit(X, None, seed=1, progress=False, checkpoint_dir=tmp_path / "a", checkpoint_every=1)
    saves = {"n": 0}
    original = Checkpoint.step

    def step_then_die(self, progress, count, final=False):
        before = self.path.exists() and self.path.stat().st_mtime_ns
        original(self, progress, count, final)
        if self.path.exists() and self.path.stat().st_mtime_ns != before:
            saves["n"] += 1
            if saves["n"] == 2:
                raise _Interrupt

    monkeypatch.setattr(Checkpoint, "step", step_then_die)
    with pytest.raises(_Interrupt):
        _tiny(name).fit(X, None, seed=1, progress=False, checkpoint_dir=tmp_path / "b", checkpoint_every=1)
    monkeypatch.setattr(Checkpoint, "step", original)
    resumed = _tiny(name).fit(X, None, seed=1, progress=False, checkpoint_dir=tmp_path / "b", checkpoint_every=1)
    for key in (straight.parts[None].model.state_dict()):
        torch.testing.assert_close(resumed.parts[None].model.state_dict()[key],
                                   straight.parts[None].model.state_dict()[key], rtol=0, atol=0, msg=key)
    np.testing.assert_array_equal(resumed.sample(5, seed=0, progress=False), straight.sample(5, seed=0, progress=False))


@pytest.mark.parametrize("name", NAMES)
def test_a_checkpoint_of_another_config_is_refused(name, tmp_path, one_thread):
    X, _ = _data(48)
    _tiny(name).fit(X, None, seed=1, progress=False, checkpoint_dir=tmp_path, checkpoint_every=1)
    with pytest.raises(ValueError, match="another config, seed or data"):
        _tiny(name).fit(X, None, seed=2, progress=False, checkpoint_dir=tmp_path, checkpoint_every=1)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_rejected_with_a_clear_error(name):
    gen = _tiny(name)
    X, y = _data(12)
    bad = X.copy()
    bad[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN/inf values in 1 stays"):
        gen.fit(bad, y, progress=False)
    with pytest.raises(ValueError, match=r"\(stays, time steps, features\)"):
        gen.fit(X[:, :, 0], y, progress=False)
    with pytest.raises(ValueError, match="single label"):
        gen.fit(X, np.zeros(len(X), np.int64), progress=False)
    with pytest.raises(ValueError, match="one label per stay"):
        gen.fit(X, y[:-1], progress=False)
    with pytest.raises(ValueError, match="unknown labels|class labels 0, 1"):
        gen.fit(X, np.where(y == 1, 1, -1), progress=False)
    with pytest.raises(RuntimeError, match="call fit"):
        gen.sample(np.array([0, 1]))


def test_sampling_asks_for_fitted_labels_only(fitted):
    gen = fitted["timevae"]
    with pytest.raises(ValueError, match=r"labels \[2\] were not in the fitted data"):
        gen.sample(np.array([0, 2]))
    with pytest.raises(ValueError, match="not a count"):
        gen.sample(5)
    unlabelled = _tiny("timevae").fit(_data(24)[0], None, progress=False)
    assert unlabelled.sample(7, progress=False).shape == (7, T, F)
    with pytest.raises(ValueError, match="fitted without labels"):
        unlabelled.sample(np.array([0, 1]))


def test_scaler_round_trip_and_ranges():
    X, _ = _data(30)
    for kind in Scaler.KINDS:  # two_x_minus_1 and none fit nothing
        scaler = Scaler.fit(kind, X)
        Z = scaler.forward(X)
        np.testing.assert_allclose(scaler.inverse(Z), X, atol=1e-5)
        if kind == "minmax01":  # per feature over stays and time, as TimeGAN's MinMaxScaler
            np.testing.assert_allclose(Z.min(axis=(0, 1)), 0, atol=1e-6)
            np.testing.assert_allclose(Z.max(axis=(0, 1)), 1, atol=1e-5)
        if kind == "minmax11":
            np.testing.assert_allclose(Z.min(axis=(0, 1)), -1, atol=1e-6)
        if kind == "minmax01_tf":  # per (time step, feature), as TimeVAE's np.min(data, 0)
            np.testing.assert_allclose(Z.min(axis=0), 0, atol=1e-6)


def test_check_xy_accepts_integer_valued_floats():
    X, y = _data(10)
    _, y_checked = check_xy(X, y.astype(np.float64))
    assert y_checked.dtype == np.int64
    with pytest.raises(ValueError, match="integer class labels"):
        check_xy(X, y + 0.5)
