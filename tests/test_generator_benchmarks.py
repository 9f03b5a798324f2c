"""experiments/generator_benchmarks.py: its targets, its table and its account of runs still training."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tardiff.generators.base import Checkpoint

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("generator_benchmarks", ROOT / "experiments" / "generator_benchmarks.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_targets_follow_the_issue_bars():
    # TimeGAN on Sines: published discriminative .011 + .02, predictive .093 + .005
    bars = bench.targets("timegan (default profile)", "sines")
    assert np.allclose(bars["discriminative"], (0, .031)) and np.allclose(bars["predictive"], (0, .098))
    assert bench.targets("timevqvae", "sines") == {"discriminative": (0, .05), "predictive": (0, .098)}
    assert bench.targets("timevqvae", "stocks") == {}
    assert np.allclose(bench.targets("real", "stocks")["predictive"], (.034, .038))


def test_table_marks_met_missed_and_unmeasured():
    rows = [{"benchmark": "sines", "generator": "timegan", "scores": {
                "discriminative": [.01, .02, .015, .012, .011], "predictive": [.2, .21, .2, .2, .2]}},
            {"benchmark": "sines", "generator": "timevae", "scores": {}, "status": "not finished: epoch 3",
             "reduction": ""}]
    table = bench.summarise(rows)
    assert table.loc[0, "discriminative_met"] and not table.loc[0, "predictive_met"]
    assert pd.isna(table.loc[1, "predictive_met"]) or table.loc[1, "predictive_met"] is None
    text = bench.markdown(table)
    assert "**missed**" in text and "not measured" in text and "timevae on sines: not finished: epoch 3" in text


def test_unfinished_reads_the_checkpoint(tmp_path):
    X = np.random.default_rng(0).random((8, 24, 2)).astype(np.float32)
    folder, key, _, _ = bench.run_folder("timevae", "sines", X, tmp_path, seed=0)
    assert bench.unfinished("timevae", "sines", X, tmp_path, 0) == "not started"
    checkpoint = Checkpoint(folder / "checkpoints" / "timevae_all.pt", meta={"x": 1})
    checkpoint.restore()
    checkpoint.step({"epoch": 7, "loss": [1.0]}, 7, final=True)
    assert "epoch 7" in bench.unfinished("timevae", "sines", X, tmp_path, 0)
    np.save(folder / "samples.npy", X)
    (folder / "record.json").write_text(json.dumps({"key": key}))
    assert bench.unfinished("timevae", "sines", X, tmp_path, 0) is None


def test_a_setting_row_changes_only_its_fields():
    config, reason = bench.settings("diffusion_ts", "sines", "train_steps=4000+sampling_timesteps=50")
    authors, _ = bench.settings("diffusion_ts", "sines")
    assert (config.train_steps, config.sampling_timesteps) == (4000, 50) and "train_steps=4000" in reason
    assert {k: v for k, v in vars(config).items() if k not in ("train_steps", "sampling_timesteps")} == \
        {k: v for k, v in vars(authors).items() if k not in ("train_steps", "sampling_timesteps")}
    assert bench.applies("diffusion_ts", "train_steps=4000") and not bench.applies("timegan", "train_steps=4000")
    assert bench.applies("timegan", "default") and bench.applies("timegan", "authors")


def test_a_row_repeating_the_authors_run_is_not_a_second_row():
    assert bench.same_as_authors("timevae", "sines", "max_epochs=1000")  # the authors' own value, spelled out
    assert not bench.same_as_authors("timevae", "sines", "default")     # the equal budget: 256 epochs of 1,000
    assert not bench.same_as_authors("timegan", "sines", "default")
    assert not bench.same_as_authors("timevae", "sines", "authors")


def test_a_setting_no_generator_has_is_refused(capsys):
    assert bench.main(["--generators", "timegan", "--reductions", "iteration=5000", "--fitted-only"]) == 2
    assert "iteration=5000" in capsys.readouterr().err


def test_a_setting_of_the_wrong_type_is_refused_before_any_fit(capsys):
    assert bench.main(["--generators", "timegan", "--reductions", "iterations=many", "--fitted-only"]) == 2
    assert "iterations" in capsys.readouterr().err


def test_timevqvae_stage1_reconstructs_through_the_codebooks(tmp_path, one_thread):
    """experiments/timevqvae_stage1.py: the reconstruction is D(Q(E(x))) of each band in data units, summed,
    its code counts are those of the tokens, and the curvature count is 0 on a sine and L - 3 on a zig-zag."""
    import torch

    from experiments import timevqvae_stage1 as stage1
    from tardiff.generators import get_generator
    from tardiff.generators.timevqvae import TimeVQVAEConfig

    X = np.random.default_rng(0).random((30, 24, 2)).astype(np.float32)
    gen = get_generator("timevqvae", TimeVQVAEConfig.tiny(), max_steps_stage1=2, max_steps_stage2=2)
    model = gen.fit(X, None, progress=False).parts[None].model.eval()
    R, info = stage1.reconstruct(model, X, batch=7)     # batches of 7: the split must not matter
    z = (torch.as_tensor(X).transpose(1, 2) - model.data_mean) / model.data_std
    with torch.no_grad():
        by_hand = sum(model.vqvae.branch(band)[2](model.vqvae.quantize(band, z)[0]) for band in ("lf", "hf"))
    np.testing.assert_allclose(R, (by_hand * model.data_std + model.data_mean).transpose(1, 2).numpy(), atol=1e-5)
    tokens = model.vqvae.tokens(z)
    assert info["lf_codes_used"] == len(torch.unique(tokens[0])) <= info["lf_codebook_size"]
    assert info["hf_relative_mse"] >= 0 and 0 <= info["lf_codes_collapsed"] <= info["lf_codebook_size"]
    t = np.arange(24, dtype=np.float32)
    assert stage1.curvature_sign_changes(np.sin(0.1 * t + 0.2)[None, :, None]) == 0   # no inflection in (0, pi)
    assert stage1.curvature_sign_changes(((-1.0) ** t)[None, :, None]) == 24 - 3
    assert stage1.main(["--work", str(tmp_path)]) == 2   # no fitted model there: a clear refusal


def test_a_run_of_some_rows_keeps_the_other_published_rows(tmp_path):
    published = pd.DataFrame({"benchmark": ["sines", "sines", "stocks"], "generator": ["real", "timegan", "real"],
                              "discriminative": [0.01, 0.2, 0.02], "status": ["scored", "not started", "scored"]})
    published.to_csv(tmp_path / "benchmark.csv", index=False)
    run = pd.DataFrame({"benchmark": ["sines", "sines"], "generator": ["real", "diffusion_ts"],
                        "discriminative": [0.011, 0.017], "status": ["scored", "scored"], "train_s": [None, 3097.0]})
    table = bench.merged(run, tmp_path / "benchmark.csv")
    assert list(zip(table.benchmark, table.generator)) == [("sines", "real"), ("sines", "timegan"),
                                                            ("stocks", "real"), ("sines", "diffusion_ts")]
    assert table.discriminative.tolist() == [0.011, 0.2, 0.02, 0.017]   # replaced, kept, kept, added
    assert "train_s" in table.columns
    assert bench.merged(run, tmp_path / "missing.csv").equals(run)
