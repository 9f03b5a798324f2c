"""The pipeline reads every dataset kind: PhysioNet 2012 folders, extractor outputs, a user's own (X, y)."""
import os
from pathlib import Path

import numpy as np
import pytest

from tardiff import real_data, stays
from tardiff.config import get_profile
from tardiff.reproduce import reproduce

DEMO = os.environ.get("TARDIFF_DEMO_DIR")
needs_demo = pytest.mark.skipif(
    not DEMO or not (Path(DEMO) / "mimic3-demo").is_dir() or not (Path(DEMO) / "eicu-demo").is_dir(),
    reason="set TARDIFF_DEMO_DIR to the folder holding mimic3-demo/ and eicu-demo/")


def _user_npz(path, n=200, seed=0, **overrides):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    X = rng.normal(size=(n, 12, 3)).astype(np.float32) * 4 + 10 + y[:, None, None]
    arrays = {"X": X, "y": y, **overrides}
    np.savez(path, **arrays)
    return path


def test_user_dataset_splits_and_standardises(tmp_path):
    path = _user_npz(tmp_path / "mine.npz")
    assert real_data.tasks_for(path, ("mortality", "long_stay")) == ("label",)
    real = real_data.load_real(path, "label", get_profile("default"))
    assert len(real.y_train) + len(real.y_val) + len(real.y_test) == 200
    assert abs(real.y_test.mean() - real.y_train.mean()) < 0.05  # stratified
    assert abs(real.X_train.mean()) < 0.05 and abs(real.X_train.std() - 1) < 0.05
    assert real.X_train.shape[1:] == (12, 3)


@pytest.mark.parametrize("overrides, message", [
    ({"y": np.full(200, 2)}, "0/1 labels"),
    ({"X": np.full((200, 12, 3), np.nan, np.float32)}, "NaN"),
    ({"X": np.zeros((200, 12), np.float32)}, "(N, T, F)"),
    ({"y": np.zeros(7, np.int64)}, "shape (200,)"),
])
def test_user_dataset_errors_name_the_file_and_problem(tmp_path, overrides, message):
    path = _user_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(stays.StayFormatError, match="bad.npz") as error:
        real_data.load_real(path, "label", get_profile("default"))
    assert message in str(error.value)


def test_user_dataset_without_y_is_refused(tmp_path):
    path = tmp_path / "noy.npz"
    np.savez(path, X=np.zeros((5, 4, 2), np.float32))
    with pytest.raises(stays.StayFormatError, match="needs arrays `X`"):
        real_data.load_real(path, "label", get_profile("default"))


def test_missing_dataset_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run notebook 01"):
        real_data.load_real(tmp_path, "mortality", get_profile("default"))


def test_physionet_fixture_dataset_keeps_set_b_as_test(tmp_path, fixture_dir):
    from tardiff import data

    written = data.extract(fixture_dir, tmp_path / "data")
    real = real_data.load_real(tmp_path / "data", "mortality", get_profile("default"))
    set_b = stays.load_stays(written["set-b"])
    assert len(real.y_test) == len(set_b["y_mortality"])
    assert len(real.y_train) + len(real.y_val) == len(stays.load_stays(written["set-a"])["y_mortality"])
    long_stay = real_data.load_real(tmp_path / "data", "long_stay", get_profile("default"))
    unknown = int((set_b["y_long_stay"] < 0).sum())
    assert long_stay.dropped.get("test_unknown_label", 0) == unknown
    assert len(long_stay.y_test) == len(set_b["y_long_stay"]) - unknown


@needs_demo
@pytest.mark.parametrize("extractor", ["mimic3", "eicu"])
def test_demo_extracts_load_in_the_pipeline(tmp_path, extractor):
    """The extractors' outputs run through notebooks 01 and 02 with --dataset (smoke profile)."""
    import importlib

    module = importlib.import_module(f"data_preprocess.{extractor}")
    folder = Path(DEMO) / ("mimic3-demo" if extractor == "mimic3" else "eicu-demo")
    out = tmp_path / f"{extractor}.npz"
    getattr(module, f"extract_{extractor}")(folder, out, quiet=True)
    for task in ("mortality", "long_stay"):
        real = real_data.load_real(out, task, get_profile("smoke"))
        assert real.X_train.shape[1:] == (24, 8) and np.isfinite(real.X_train).all()
    report = reproduce("smoke", dataset=str(out), outputs=str(tmp_path / "outputs"),
                       figures=str(tmp_path / "figures"), device="cpu",
                       only=("01_extraction", "02_train_classifier"))
    assert not report["02_train_classifier"]["skipped"]
    assert (tmp_path / "outputs" / "models" / "classifier_mortality.pt").exists()


def test_batch_generators_choose_the_generators_the_batch_runs():
    """`batch_generators` leaves baseline generators out of every step (sampling, pools, fitting); others stay."""
    from tardiff import methods, pipeline
    from tardiff.config import parse_overrides, with_overrides
    from tardiff.generators import GENERATORS

    default = get_profile("default")
    assert pipeline.batch_methods(default) == methods.methods()
    none = with_overrides(default, **parse_overrides(["batch_generators="]))
    assert none.batch_generators == ()
    assert pipeline.batch_methods(none) == [m for m in methods.methods() if m not in GENERATORS]
    study = with_overrides(none, augment_sources=("ddpm", "cfg", "classifier_guidance", "tardiff", "timevae"))
    assert pipeline.pooled_in_sampling(study) == ["ddpm", "cfg", "classifier_guidance"]  # not the left-out timevae
    one = with_overrides(default, batch_generators=("timevae",))
    assert set(pipeline.batch_methods(one)) - set(pipeline.batch_methods(none)) == {"timevae"}
    with pytest.raises(ValueError, match="batch_generators.*'tvae'"):   # refused by the profile itself
        with_overrides(default, batch_generators=("tvae",))
    from tardiff.reproduce import main   # so `--set` stops before any notebook runs
    assert main(["--profile", "smoke", "--set", "batch_generators=tvae", "--outputs", "/nonexistent"]) == 2


def test_paper_table_marks_generators_not_run_and_margins_use_those_run():
    """A generator left out of the batch keeps an empty 'not run' row; a missing diffusion row is an error;
    the margins are over the baselines that ran, and skipped where none did."""
    import pandas as pd

    from tardiff import paper

    def tstr(names):
        return pd.DataFrame([{"task": task, "method": name, "auroc_mean": value, "auroc_sd": .01,
                              "auprc_mean": value / 2, "auprc_sd": .01}
                             for task in paper.TASKS for value, name in zip(np.linspace(.6, .7, len(names)), names)])

    rows = ["real", "tardiff", *paper.EXTRA_ROWS]
    table = paper.ours(tstr(rows))
    not_run = table[table["method"].isin(paper.BASELINES)]
    assert not_run["label"].str.endswith("(not run)").all() and not_run["mortality_auroc"].isna().all()
    assert paper.margins(table).empty
    assert "| TimeGAN (not run) |  |" in paper.markdown(table)
    with_one = paper.ours(tstr(["timevae", *rows]))  # timevae .6 is the best (the only) baseline
    margins = paper.margins(with_one)
    assert set(margins["best_baseline"]) == {"timevae"} and len(margins) == len(paper.COLUMNS)
    with pytest.raises(ValueError, match="lacks \\['cfg'\\]"):
        paper.ours(tstr([m for m in rows if m != "cfg"]))
