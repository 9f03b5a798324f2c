"""Equal compute: the default profile's counts are the measured ones, a shared budget splits by label, and the
budget-curve experiment scales every method and never reads a test stay (experiments/budget_curves.py)."""
import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tardiff.config import EQUAL_BUDGET, get_profile, with_overrides
from tardiff.generators import GENERATORS, generator_class, get_generator
from tardiff.generators.timegan import TimeGANConfig
from tardiff.generators.timevae import TimeVAEConfig
from tardiff.real_data import RealData

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("budget_curves", ROOT / "experiments" / "budget_curves.py")
budget_curves = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(budget_curves)


def test_the_default_profile_trains_each_generator_for_the_measured_budget():
    measured = pd.read_csv(ROOT / "results" / "budget_curves" / "budget.csv").set_index("method")
    default = get_profile("default")
    assert measured.loc["cfg", "units_at_budget"] == default.diffusion_train.steps
    assert default.generator_label_budget == "shared"
    for name in GENERATORS:
        assert budget_curves.units_of(default, name) == measured.loc[name, "units_at_budget"], name
        for field, value in EQUAL_BUDGET[name].items():
            assert getattr(getattr(default.generators, name), field) == value, (name, field)
    assert set(EQUAL_BUDGET) == set(GENERATORS)


def _imbalanced(n0=30, n1=10, seed=0):
    X = np.random.default_rng(seed).normal(size=(n0 + n1, 6, 3)).astype(np.float32)
    return X, np.r_[np.zeros(n0), np.ones(n1)].astype(np.int64)


def test_a_shared_budget_gives_each_label_model_its_share_of_the_steps(one_thread):
    X, y = _imbalanced()
    shared = get_generator("timegan", TimeGANConfig.tiny()).fit(X, y, progress=False, label_budget="shared")
    each = get_generator("timegan", TimeGANConfig.tiny()).fit(X, y, progress=False)
    total = TimeGANConfig.tiny().iterations
    assert {k: p.history["iterations_per_phase"] for k, p in shared.parts.items()} == \
        {0: round(total * 30 / 40), 1: round(total * 10 / 40)}
    assert {k: p.history["iterations_per_phase"] for k, p in each.parts.items()} == {0: total, 1: total}
    assert shared.config.iterations == total and shared.info["label_budget"] == "shared"


def test_epochs_need_no_split_and_a_label_model_gets_at_least_one_step():
    vae = generator_class("timevae")(TimeVAEConfig.tiny())
    assert vae.budget_unit == "epochs" and vae.label_share(vae.config, 1, 100) == vae.config
    gan = generator_class("timegan")(TimeGANConfig.tiny())
    assert gan.label_share(gan.config, 1, 10_000).iterations == 1
    with pytest.raises(ValueError, match="label_budget"):
        gan.fit(*_imbalanced(), label_budget="half")


def test_every_method_is_scaled_and_timevqvae_keeps_its_stage_ratio():
    default = get_profile("default")
    quarter = budget_curves.at_multiple(default, 0.25)
    for name in budget_curves.METHODS:
        assert budget_curves.units_of(quarter, name) == max(1, round(budget_curves.units_of(default, name) / 4))
    vq = quarter.generators.timevqvae
    assert vq.max_steps_stage2 == 2 * vq.max_steps_stage1
    assert quarter.generators.diffusion_ts.sampling_timesteps == default.generators.diffusion_ts.sampling_timesteps


def test_the_curves_select_on_synthetic_stays_and_score_on_real_validation_only():
    rng = np.random.default_rng(0)
    real = RealData(X_train=rng.normal(size=(50, 4, 2)), y_train=np.r_[np.zeros(40), np.ones(10)].astype(int),
                    X_val=rng.normal(size=(20, 4, 2)), y_val=np.r_[np.zeros(15), np.ones(5)].astype(int),
                    X_test=rng.normal(size=(30, 4, 2)) + 100, y_test=np.r_[np.zeros(20), np.ones(10)].astype(int),
                    task="mortality")
    X_syn = rng.normal(size=(60, 4, 2)).astype(np.float32)
    y_syn = np.r_[np.zeros(45), np.ones(15)].astype(int)
    held = budget_curves.validation_only(real, seed=0)(X_syn, y_syn)
    assert np.array_equal(held.X_test, real.X_val) and np.array_equal(held.y_test, real.y_val)
    assert np.bincount(held.y_val).tolist() == [4, 1]  # a stratified tenth of the synthetic set
    pooled = np.concatenate([held.X_train, held.X_val])
    assert len(pooled) == len(X_syn) and np.allclose(np.sort(pooled.ravel()), np.sort(X_syn.ravel()))
    assert not np.any(np.abs(np.concatenate([held.X_train, held.X_val, held.X_test])) > 50)  # no test stay


@pytest.mark.slow
def _toy_real(seed: int) -> RealData:
    """64 training and 32 validation stays whose label shifts every value: a task any generator can learn."""
    rng = np.random.default_rng(seed)
    y_train, y_val = np.r_[np.zeros(48), np.ones(16)].astype(int), np.r_[np.zeros(24), np.ones(8)].astype(int)
    return RealData(X_train=rng.normal(size=(64, 6, 3)) + y_train[:, None, None],
                    y_train=y_train, X_val=rng.normal(size=(32, 6, 3)) + y_val[:, None, None], y_val=y_val,
                    task="mortality", name="toy")


def test_the_curves_run_end_to_end_on_the_smoke_profile(tmp_path, one_thread):
    real = _toy_real(1)
    profile = with_overrides(get_profile("smoke"), n_seeds=1, bootstrap=20)
    rows = budget_curves.curves(profile, real, [0.5, 1.0], tmp_path, seed=0, names=("cfg", "timevae"),
                                commit="abc")
    assert sorted(rows.method.unique()) == ["cfg", "real", "timevae"]
    assert rows.dropna(subset=["multiple"]).groupby("method").multiple.apply(sorted).to_dict() == \
        {"cfg": [0.5, 1.0], "timevae": [0.5, 1.0]}
    fitted = rows.dropna(subset=["multiple"])
    assert (fitted.fit_wall_s > 0).all() and (fitted.sample_wall_s >= 0).all()  # each model's own fit time
    units = rows.set_index(["method", "multiple"]).units
    assert units[("cfg", 0.5)] == round(profile.diffusion_train.steps / 2)
    again = budget_curves.curves(profile, real, [0.5, 1.0], tmp_path, seed=0, names=("cfg", "timevae"),
                                 commit="abc")
    pd.testing.assert_frame_equal(again, rows)  # resumed from rows.csv, nothing refitted
    assert "timevae" in budget_curves.markdown(rows)
    assert set(rows.commit) == {"abc"}
    # a changed generator is fitted again alone; the other rows stay, from the published curves when work is gone
    published = tmp_path / "published.csv"
    rows.assign(commit="old").to_csv(published, index=False)
    (tmp_path / "rows.csv").unlink()
    for fit in tmp_path.glob("x*/models/timevae_mortality"):
        (fit / "old-fit").touch()
    refit = budget_curves.curves(profile, real, [0.5, 1.0], tmp_path, seed=0, names=("cfg", "timevae"),
                                 commit="new", refit=("timevae",), published=published)
    assert refit.groupby("method").commit.agg(set).to_dict() == {"real": {"old"}, "cfg": {"old"}, "timevae": {"new"}}
    assert list(zip(refit.method, refit.multiple.fillna(0))) == list(zip(rows.method, rows.multiple.fillna(0)))
    assert not list(tmp_path.glob("x*/models/timevae_mortality/old-fit"))  # fitted anew, not its old fit resumed
    assert len(list(tmp_path.glob("x*/models/timevae_mortality"))) == 2
    from tardiff import plots

    fig = plots.budget_curves(rows, tmp_path / "budget_curves.png")
    assert (tmp_path / "budget_curves.png").stat().st_size > 0
    for ax in fig.axes:  # each generator, and the real ceiling, in both panels
        assert set(ax.get_legend_handles_labels()[1]) == {"Real", "CFG", "TimeVAE"}


def test_other_seeds_refit_every_row_and_seed_zero_is_the_published_one(tmp_path, one_thread):
    real = _toy_real(2)
    profile = with_overrides(get_profile("smoke"), n_seeds=1, bootstrap=20)
    names = ("cfg", "timevae")
    published = tmp_path / "curves.csv"
    budget_curves.curves(profile, real, [1.0, 2.0], tmp_path / "published", seed=0, names=names,
                         commit="pub").to_csv(published, index=False)
    rows = budget_curves.seed_rows(profile, real, [1.0], tmp_path / "work", [0, 1], names, commit="new",
                                   published=published)
    assert rows.groupby("seed").method.apply(sorted).to_dict() == {0: ["cfg", "real", "timevae"],
                                                                    1: ["cfg", "real", "timevae"]}
    assert set(rows[rows.seed == 0].commit) == {"pub"} and set(rows[rows.seed == 1].commit) == {"new"}
    assert set(rows.multiple.dropna()) == {1.0}  # only the multiple asked for, from the published rows too
    assert not (tmp_path / "work" / "seed0").exists()  # seed 0 not fitted again
    other_task = budget_curves.seed_rows(profile, replace(real, task="long_stay"), [1.0],
                                         tmp_path / "other", [0], names, published=published)
    assert set(other_task.commit) != {"pub"}  # mortality's published rows are not long stay's seed 0
    fitted = rows.dropna(subset=["multiple"]).set_index(["method", "seed"]).auroc_ensemble
    assert fitted[("timevae", 0)] != fitted[("timevae", 1)]  # another seed is another fit
    text = budget_curves.seeds_markdown(rows)
    assert "| seed 0 | seed 1 | mean | range |" in text and "- seed 1: " in text
    spread = abs(fitted[("cfg", 0)] - fitted[("cfg", 1)])
    assert f"{spread:.3f} |" in text.split("| cfg |")[1].splitlines()[0]


@pytest.mark.parametrize("argv, named", [(["seeds", "--seeds", "a"], "--seeds integers"),
                                         (["curves", "--multipliers", "x"], "--multipliers takes numbers"),
                                         (["seeds", "--multipliers", "-1"], "must be positive"),
                                         (["render", "--out", "absent"], "curves.csv")])
def test_bad_arguments_are_refused_in_one_line_before_any_data_is_read(argv, named, capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        budget_curves.main(argv[:-1] + [str(tmp_path / argv[-1])] if argv[0] == "render" else argv)
    assert stop.value.code == 2 and named in capsys.readouterr().err
