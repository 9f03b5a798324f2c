"""Synthetic data for one's own cohort: the public API and `python -m tardiff generate` on the fixtures."""
import json

import numpy as np
import pytest

from tardiff.__main__ import main
from tardiff.api import TarDiff, load_xy

SMOKE = {"diffusion_train.steps": 20, "sampling.ddim_steps": 3}


def cohort(n=160, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    X = (rng.normal(size=(n, 24, 3)) * [5.0, 10.0, 1.0] + [80.0, 120.0, 37.0] + 3.0 * y[:, None, None]).astype(np.float32)
    return X, y


@pytest.mark.slow
def test_fit_sample_save_load_round_trip(tmp_path):
    X, y = cohort()
    model = TarDiff("smoke", overrides=SMOKE).fit(X, y, models_dir=tmp_path / "m", progress=False)
    X_syn, y_syn = model.sample("tardiff_dot", n=50, progress=False)
    assert X_syn.shape == (50, 24, 3) and len(y_syn) == 50
    assert abs(y_syn.sum() - 50 * y.mean()) <= 1.5  # the training set's label proportions
    z, _ = model.sample("tardiff_dot", n=50, physical=False, progress=False)  # the same draw, in z-scores
    assert np.allclose(X_syn, z * model.scale["sd"] + model.scale["mean"],
                       atol=1e-3)
    assert np.allclose(model.scale["mean"], X.mean(axis=(0, 1)), rtol=0.05)
    again = TarDiff.load(model.save(tmp_path / "saved"))
    X_again, y_again = again.sample("tardiff_dot", n=50, progress=False)
    assert np.allclose(X_again, X_syn, atol=1e-5) and np.array_equal(y_again, y_syn)
    z, _ = again.sample("cfg", n={0: 4, 1: 6}, physical=False, progress=False)
    assert z.shape == (10, 24, 3)
    with pytest.raises(ValueError, match="registered"):
        again.sample("tardif")
    with pytest.raises(ValueError, match="selects on validation"):  # `tardiff` is the batch's pick, not a variant
        again.sample("tardiff")


@pytest.mark.slow
def test_generate_command_on_the_vendored_fixtures(tmp_path, fixture_dir):
    from tardiff import data

    stays = data.extract(fixture_dir, tmp_path / "data")["set-a"]
    out = tmp_path / "synth.npz"
    args = ["generate", "--dataset", str(stays), "--method", "tardiff_dot", "--n", "20", "--out", str(out),
            "--profile", "smoke", *sum((["--set", f"{k}={v}"] for k, v in SMOKE.items()), [])]
    assert main(args) == 0
    with np.load(out) as synth:
        assert synth["X"].shape == (20, 24, 8) and len(synth["y"]) == 20
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["stays"] == 20 and manifest["config"]["method"] == "tardiff_dot"
    assert main(args) == 0  # the second run reuses the fitted models


def test_own_data_files_get_clear_errors(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros((3, 4, 2)))
    (tmp_path / "empty.npz").write_bytes(b"")
    np.savez(tmp_path / "pickled.npz", X=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    np.savez(tmp_path / "noy.npz", X=np.zeros((3, 4, 2)))
    import pickle

    (tmp_path / "real_pickle.npz").write_bytes(pickle.dumps({"X": 1}))
    for name, message in (("a.npy", "not an .npz"), ("empty.npz", "not a readable .npz"),
                          ("pickled.npz", "pickle"), ("noy.npz", "expected an .npz with arrays X"),
                          ("missing.npz", "no such file"), ("real_pickle.npz", "pickle")):
        with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
            load_xy(tmp_path / name)
        assert name in str(error.value) and "allow_pickle" not in str(error.value)
    assert main(["generate", "--dataset", str(tmp_path / "a.npy"), "--out", str(tmp_path / "o.npz")]) == 2
    assert "a.npy" in capsys.readouterr().err
    assert main(["generate", "--dataset", str(tmp_path / "noy.npz"), "--out", str(tmp_path / "o.npz"),
                 "--n", "0"]) == 2
    assert "--n" in capsys.readouterr().err
    for bad in (["--per-label", "5"], ["--per-label", "0,0"], ["--per-label", "a,b"], ["--n", "5", "--alpha", "1"],
                ["--alpha", "0"], ["--alpha", "nan"]):
        assert main(["generate", "--dataset", str(tmp_path / "noy.npz"), "--out", str(tmp_path / "o.npz"), *bad]) == 2
        assert bad[0] in capsys.readouterr().err


def test_a_baseline_generator_fits_alone_and_a_folder_grows(tmp_path):
    """fit(methods=[...]) trains only what those methods need; a later fit in the same folder adds to it, and
    sampling a method that was not fitted says what to do."""
    X, y = cohort(120)
    model = TarDiff("smoke").fit(X, y, models_dir=tmp_path / "m", methods=["timevae"], progress=False)
    assert model.fitted() == {"timevae"}
    assert not (tmp_path / "m" / "classifier_label.pt").exists()   # no f_theta for a baseline generator
    X_syn, y_syn = model.sample("timevae", n={0: 7, 1: 5}, progress=False)
    assert X_syn.shape == (12, 24, 3) and np.bincount(y_syn).tolist() == [7, 5]
    n_train = len(model._cohort.y_train)
    _, y_aug = model.sample("timevae", alpha=0.5, progress=False)   # an augmentation set: 0.5 x the training stays
    assert len(y_aug) == round(0.5 * n_train)
    assert abs(y_aug.mean() - model._cohort.y_train.mean()) <= 1 / len(y_aug)
    with pytest.raises(ValueError, match="n or alpha"):
        model.sample("timevae", n=3, alpha=1.0)
    assert np.allclose(X_syn.mean(axis=(0, 1)), X.mean(axis=(0, 1)), rtol=0.5)  # back in X's units
    with pytest.raises(RuntimeError, match=r"timegan needs \['timegan'\], not fitted"):
        model.sample("timegan")
    grown = TarDiff("smoke").fit(X, y, models_dir=tmp_path / "m", methods=["timegan"], progress=False)
    assert grown.fitted() == {"timevae", "timegan"}
    again, _ = TarDiff.load(tmp_path / "m").sample("timevae", n={0: 7, 1: 5}, progress=False)
    np.testing.assert_allclose(again, X_syn, atol=1e-5)                 # the first fit was kept, not redone
    with pytest.raises(ValueError, match="fitted on other data"):
        TarDiff("smoke").fit(X[::-1], y[::-1], models_dir=tmp_path / "m", methods=["timevae"], progress=False)


@pytest.mark.slow
def test_generate_command_with_a_baseline_generator(tmp_path, fixture_dir):
    from tardiff import data

    stays = data.extract(fixture_dir, tmp_path / "data")["set-a"]
    out = tmp_path / "timegan.npz"
    args = ["generate", "--dataset", str(stays), "--method", "timegan", "--n", "12", "--out", str(out),
            "--profile", "smoke"]
    assert main(args) == 0
    with np.load(out) as synth:
        assert synth["X"].shape == (12, 24, 8) and len(synth["y"]) == 12
    assert (tmp_path / "timegan_models" / "timegan_label" / "manifest.json").exists()
    assert main(args) == 0  # reused


def test_the_api_imports_without_the_plotting_stack_or_evaluation_below_the_pipeline():
    """Fitting and sampling for one's own cohort need neither matplotlib nor seaborn; generation code (the
    registry, references, sampler) does not import evaluation."""
    import subprocess
    import sys

    code = ("import sys, tardiff.api, tardiff.__main__; "
            "print(sorted(m for m in ('matplotlib', 'seaborn', 'tardiff.plots') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = ("import sys, tardiff.sampler, tardiff.references, tardiff.methods; "
            "print('tardiff.evaluate' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"
