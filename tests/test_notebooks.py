"""Notebooks: paired with their .py twins, thin, parameterised; the smoke batch runs end to end."""
import json
import os
import sys
from pathlib import Path

import jupytext
import numpy as np
import pandas as pd
import pytest

from tardiff.reproduce import NOTEBOOKS, ROOT, reproduce

NOTEBOOK_DIR = ROOT / "notebooks"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_pair_in_sync_and_clean(name):
    script = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    notebook = jupytext.read(NOTEBOOK_DIR / f"{name}.ipynb")
    sources = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]
    assert sources(script) == sources(notebook), f"{name}: run `make sync-notebooks`"
    raw = json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())
    assert all(not c.get("outputs") for c in raw["cells"] if c["cell_type"] == "code"), "outputs committed"
    assert "/work/" not in (NOTEBOOK_DIR / f"{name}.ipynb").read_text(), "absolute path committed"
    tagged = [c for c in script.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: needs exactly one `parameters` cell"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_cells_are_thin(name):
    script = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    for cell in script.cells:
        if cell.cell_type == "code":
            lines = [l for l in cell.source.splitlines() if l.strip() and not l.strip().startswith("#")]
            assert len(lines) <= 15, f"{name}: a {len(lines)}-line cell belongs in the tardiff package"


def test_published_notebooks_lose_this_machines_paths(tmp_path):
    from tardiff.reproduce import portable_paths
    outputs, figures = tmp_path / "run" / "outputs", tmp_path / "figs"
    text = json.dumps({"outputs_dir": str(outputs), "figures_dir": str(figures), "data": f"{outputs}/data/set-a.npz",
                       "warning": f"{sys.prefix}/lib/tqdm/auto.py:21", "notebook": f"{ROOT}/notebooks/03.ipynb",
                       "data_dir": "/archives/2012", "other": "/archives/2012b"})
    assert json.loads(portable_paths(text, outputs, figures, "/archives/2012")) == {
        "outputs_dir": "outputs", "figures_dir": "figures", "data": "outputs/data/set-a.npz",
        "warning": "<env>/lib/tqdm/auto.py:21", "notebook": "./notebooks/03.ipynb",
        "data_dir": "<data-dir>", "other": "/archives/2012b"}


def _smoke_data_dir() -> Path:
    env = os.environ.get("TARDIFF_DATA_DIR")
    if env and Path(env).is_dir():
        return Path(env)
    return ROOT / "tests" / "fixtures" / "physionet2012"


@pytest.mark.slow
def test_smoke_reproduction_end_to_end(tmp_path):
    outputs, figures = tmp_path / "outputs", tmp_path / "figures"
    report = reproduce("smoke", data_dir=str(_smoke_data_dir()), outputs=str(outputs), figures=str(figures),
                       device="auto")  # what users get: every step must resolve "auto" itself
    assert all(not step["skipped"] for step in report.values())
    for name in NOTEBOOKS:
        assert (outputs / "notebooks" / f"{name}.ipynb").exists()
    from tardiff import methods

    selection = pd.read_csv(outputs / "tables" / "selection.csv")
    for task, rows in selection.groupby("task"):
        chosen = rows[rows["selected"]]
        assert len(chosen) == 1 and chosen["role"].iloc[0] == "candidate"
        assert chosen["criterion"].iloc[0] == rows[rows["role"] == "candidate"]["criterion"].max()
    tstr = pd.read_csv(outputs / "tables" / "tstr.csv")
    assert list(tstr.columns[:7]) == ["task", "method", "auroc_mean", "auroc_sd", "auprc_mean", "auprc_sd",
                                      "n_seeds"]
    assert set(tstr["method"]) == {"real", "tardiff", *methods.REGISTRY}
    assert tstr[["auroc_mean", "auprc_mean"]].apply(lambda c: c.between(0, 1)).all().all()
    tstr_all = pd.read_csv(outputs / "tables" / "tstr_all.csv")
    for task, rows in tstr_all.groupby("task"):  # `tardiff` is the selected candidate, the same models
        tardiff = rows[rows["method"] == "tardiff"]
        source = rows[rows["method"] == tardiff["selected_from"].iloc[0]]
        assert tardiff["auroc_mean"].tolist() == source["auroc_mean"].tolist()
    assert set(tstr_all["downstream"]) == {"gru", "cnn"}
    paired = pd.read_csv(outputs / "tables" / "paired.csv")
    assert list(paired.columns[:7]) == ["task", "method", "baseline", "metric", "diff", "ci_low", "ci_high"]
    assert (paired["ci_low"] <= paired["diff"] + 1e-12).all() and (paired["diff"] <= paired["ci_high"] + 1e-12).all()
    assert set(paired[paired["method"] == "tardiff"]["baseline"]) == {"cfg"}
    from tardiff import paper

    for name in paper.BASELINES:  # every baseline generator against TarDiff's backbone and the reported tardiff
        assert set(paired[paired["method"] == name]["baseline"]) == {"cfg", "tardiff"}, name
    table = pd.read_csv(outputs / "tables" / "paper_table.csv")
    assert table["method"].tolist() == [*paper.PAPER_ROWS, *paper.EXTRA_ROWS]
    gru = tstr.set_index(["task", "method"])
    for _, row in table.iterrows():  # the paper table is the GRU TSTR, row by row
        for task in paper.TASKS:
            assert row[f"{task}_auroc"] == pytest.approx(gru.loc[(task, row["method"]), "auroc_mean"])
    margins = pd.read_csv(outputs / "tables" / "margins.csv")
    assert {"PhysioNet 2012 (ours)", "MIMIC-III", "eICU"} == set(margins["dataset"])
    assert "| TimeGAN |" in (outputs / "tables" / "paper_table.md").read_text()
    field = pd.read_csv(outputs / "tables" / "field_fidelity.csv")
    assert {"real (train)", "tardiff", *paper.BASELINES} <= set(field["method"])
    assert (field[["context_fid", "correlational", "discriminative", "predictive"]] >= 0).all().all()
    from tardiff import augment
    from tardiff.config import get_profile

    smoke = get_profile("smoke")
    tsrtr = pd.read_csv(outputs / "tables" / "tsrtr.csv")
    assert tsrtr["alpha"].isin([0.0, *smoke.augment_alphas]).all()
    assert set(tsrtr["method"]) == {"real", "pool", *smoke.augment_sources}
    choice = pd.read_csv(outputs / "tables" / "augment_selection.csv")
    gains = pd.read_csv(outputs / "tables" / "tsrtr_paired.csv")
    for task, rows in choice.groupby("task"):  # one setting chosen on validation, reported as `augment`
        chosen = rows[rows["selected"]]
        assert len(chosen) == 1 and chosen["criterion"].iloc[0] == rows["criterion"].max()
        pick = gains[(gains["task"] == task) & (gains["setting"] == augment.SELECTED)]
        assert set(pick["selected_from"]) == {chosen["setting"].iloc[0]}
        same = gains[(gains["task"] == task) & (gains["setting"] == chosen["setting"].iloc[0])]
        assert pick["diff"].tolist() == same["diff"].tolist()
    assert set(gains["downstream"]) == set(smoke.augment_downstream)
    assert ((gains["ci_low"] <= gains["diff"] + 1e-12) & (gains["diff"] <= gains["ci_high"] + 1e-12)).all()
    assert (figures / "augmentation_mortality.png").exists()
    assert (figures / "tstr_by_generator.png").exists() and (figures / "embedding_mortality.png").exists()
    diagnostics = pd.read_csv(outputs / "tables" / "diagnostics.csv")
    assert {"real (train)", "tardiff", "ddpm"} <= set(diagnostics["method"])
    fidelity = pd.read_csv(outputs / "tables" / "fidelity.csv")
    assert (fidelity["discriminative_sd"] >= 0).all()
    for table in ("fidelity.csv", "privacy.csv", "ablation.md", "tstr.md", "tstr_cnn.md", "tsrtr.md"):
        assert (outputs / "tables" / table).stat().st_size > 0
    assert len(list(figures.glob("*.png"))) >= 6
    from tardiff.reproduce import publish

    published = publish(outputs, tmp_path / "results", "smoke", figures, _smoke_data_dir())
    manifest = json.loads((published / "manifest.json").read_text())
    assert len(manifest["commit"]) == 40 and manifest["steps"]["05_evaluation"]["wall_time_s"] > 0
    assert manifest["config"] == {"profile": "smoke", "overrides": {}}
    assert (published / "tstr.csv").read_bytes() == (outputs / "tables" / "tstr.csv").read_bytes()
    assert len(list((published / "notebooks").glob("*.ipynb"))) == len(NOTEBOOKS)
    for path in (published / "notebooks").glob("*.ipynb"):  # valid, and without this machine's paths
        text = path.read_text()
        assert json.loads(text)["cells"] and "outputs/" in text, path.name
        assert str(tmp_path) not in text and sys.prefix not in text and str(_smoke_data_dir()) not in text, path.name
    again = reproduce("smoke", data_dir=str(_smoke_data_dir()), outputs=str(outputs), figures=str(figures),
                      device="auto")
    assert all(step["skipped"] for step in again.values()), "unchanged inputs must be skipped"
    synthetic = outputs / "synthetic" / "mortality" / "cfg.npz"
    synthetic.write_bytes(synthetic.read_bytes()[:100])  # a truncated artifact reruns the step that made it
    third = reproduce("smoke", data_dir=str(_smoke_data_dir()), outputs=str(outputs), figures=str(figures),
                      device="auto", only=NOTEBOOKS[:4])
    assert [step["skipped"] for step in third.values()] == [True, True, True, False]
    assert np.load(synthetic)["X"].shape[0] > 0
    # last: the experiment writes into the batch's tables, which a rerun would see as changed
    from experiments.f_theta_capacity import main as f_theta_capacity  # reads the batch's outputs

    f_theta_capacity(["--outputs", str(outputs), "--profile", "smoke", "--hidden", "8", "--layers", "2"])
    capacity = pd.read_csv(outputs / "tables" / "f_theta_capacity.csv")
    assert len(capacity) == 3 * len(tstr["task"].unique()) and capacity["test_auroc"].between(0, 1).all()


def test_set_overrides_are_type_checked_and_recorded(tmp_path):
    """--set reaches the notebooks as `overrides`; a bad key or value stops before any notebook runs."""
    from tardiff.config import get_profile, parse_overrides, with_overrides
    from tardiff.reproduce import main

    profile = with_overrides(get_profile("default"), **parse_overrides(
        ["guidance_scale=0.1", "n_seeds=5", "augment_alphas=0.2,1", "eval_train.max_epochs=7", "max_train_stays=300"]))
    assert (profile.guidance_scale, profile.n_seeds, profile.augment_alphas) == (0.1, 5, (0.2, 1.0))
    assert profile.eval_train.max_epochs == 7 and profile.max_train_stays == 300
    for bad, message in ((["n_seeds=2.5"], "must be a int"), (["nseeds=3"], "unknown setting"),
                         (["augment_alphas=a"], "must be a tuple"), (["guidance_scale"], "key=value")):
        with pytest.raises(ValueError, match=message):
            with_overrides(get_profile("default"), **parse_overrides(bad))
    assert main(["--profile", "smoke", "--set", "nseeds=3", "--outputs", str(tmp_path)]) == 2
    report = reproduce("smoke", data_dir=str(_smoke_data_dir()), outputs=str(tmp_path / "out"),
                       figures=str(tmp_path / "fig"), only=("01_extraction",), overrides={"n_seeds": "4"})
    manifest = json.loads((tmp_path / "out" / "notebooks" / "01_extraction.json").read_text())
    assert manifest["config"]["overrides"] == {"n_seeds": "4"} and not report["01_extraction"]["skipped"]
    from tardiff.reproduce import publish

    (tmp_path / "out" / "tables").mkdir()
    (tmp_path / "out" / "tables" / "t.csv").write_text("a\n1\n")
    published = json.loads((publish(tmp_path / "out", tmp_path / "res", "smoke") / "manifest.json").read_text())
    assert published["config"] == {"profile": "smoke", "overrides": {"n_seeds": "4"}}   # what the tables ran with
    step = tmp_path / "out" / "notebooks" / "02_train_classifier.json"
    step.write_text(json.dumps({**manifest, "config": {**manifest["config"], "overrides": {}}}))
    with pytest.raises(ValueError, match="different --set overrides"):
        publish(tmp_path / "out", tmp_path / "refused", "smoke")
    assert not (tmp_path / "refused").exists()   # checked before anything is copied


def test_a_failing_step_is_not_done_and_later_steps_follow_its_outputs(tmp_path, monkeypatch):
    """A failed step loses its manifest (it reruns); a later step reruns exactly when an earlier output changed."""
    import tardiff.reproduce as rp

    outputs = tmp_path / "out"
    version = {"models/ddpm.pt": b"v1"}
    ran = []

    def fake(name, parameters, out_dir, notebooks_dir):
        ran.append(name)
        if name == "03_train_diffusion":
            if version.get("fail"):
                (outputs / "models" / "ddpm.pt").write_bytes(b"partial")
                raise rp.NotebookFailed("03 failed")
            (outputs / "models").mkdir(parents=True, exist_ok=True)
            (outputs / "models" / "ddpm.pt").write_bytes(version["models/ddpm.pt"])
        (out_dir / f"{name}.ipynb").write_text("{}")

    monkeypatch.setattr(rp, "execute", fake)
    run = lambda: rp.reproduce("smoke", outputs=str(outputs), figures=str(tmp_path / "fig"))
    run()
    assert ran == list(NOTEBOOKS)
    ran.clear(), run()
    assert ran == []                                    # nothing changed: every step reused
    version["fail"] = True
    (outputs / "models" / "ddpm.pt").write_bytes(b"tampered")  # 03's output changed: 03 reruns, and fails
    with pytest.raises(rp.NotebookFailed):
        ran.clear(), run()
    assert not (outputs / "notebooks" / "03_train_diffusion.json").exists()
    version.pop("fail")
    ran.clear(), run()
    assert ran == ["03_train_diffusion"]                # same outputs as before: 04 and 05 stay current
    version["models/ddpm.pt"] = b"v2"
    (outputs / "models" / "ddpm.pt").write_bytes(b"tampered")
    ran.clear(), run()
    assert ran == ["03_train_diffusion", "04_guided_sampling", "05_evaluation"]


def test_step_keys_follow_code_not_comments(tmp_path):
    import shutil

    from tardiff.reproduce import ROOT, code_digest

    package = tmp_path / "tardiff"
    shutil.copytree(ROOT / "tardiff", package, ignore=shutil.ignore_patterns("__pycache__"))
    notebooks = {name: ROOT / "notebooks" / f"{name}.py" for name in NOTEBOOKS}
    before = {name: code_digest(path, package) for name, path in notebooks.items()}
    plots = package / "plots.py"
    plots.write_text(plots.read_text().replace("\ndef _style", "\n# a comment only\ndef _style", 1))
    assert {name: code_digest(path, package) for name, path in notebooks.items()} == before
    data = package / "data.py"  # reached by notebook 01 only
    data.write_text(data.read_text() + "\n\nANSWER = 42\n")
    after = {name: code_digest(path, package) for name, path in notebooks.items()}
    assert [name for name in NOTEBOOKS if after[name] != before[name]] == ["01_extraction"]


def test_force_redoes_extraction(tmp_path, monkeypatch):
    import tardiff.reproduce as rp

    data = tmp_path / "out" / "data"
    data.mkdir(parents=True)
    (data / "manifest.json").write_text("{}")
    monkeypatch.setattr(rp, "execute", lambda *args: None)
    rp.reproduce("smoke", outputs=str(tmp_path / "out"), figures=str(tmp_path / "fig"), force=True,
                 only=("01_extraction",))
    assert not (data / "manifest.json").exists()


def test_only_the_default_profile_writes_the_committed_figures(tmp_path, monkeypatch):
    """A smoke check (or a GPU run of the paper profile) must not overwrite the figures README shows."""
    import tardiff.reproduce as rp

    seen = {}
    monkeypatch.setattr(rp, "execute", lambda name, parameters, *rest: seen.setdefault(name, parameters))
    for profile in ("smoke", "paper", "default"):
        seen.clear()
        rp.reproduce(profile, outputs=str(tmp_path / profile), only=("01_extraction",))
        expected = ROOT / "figures" if profile == "default" else tmp_path / profile / "figures"
        assert seen["01_extraction"]["figures_dir"] == str(expected), profile
    seen.clear()
    rp.reproduce("smoke", outputs=str(tmp_path / "smoke"), figures="mine", only=("01_extraction",))
    assert seen["01_extraction"]["figures_dir"] == str(ROOT / "mine")  # asked for: where it was asked
