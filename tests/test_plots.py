"""Every figure function writes a non-empty PNG and returns its Figure."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tardiff import plots  # noqa: E402
from tardiff.stays import CHANNELS, Preprocessor  # noqa: E402

RNG = np.random.default_rng(0)
N, T, F = 40, 24, len(CHANNELS)
X_RAW = (RNG.normal(size=(N, T, F)) * 5 + np.array([80, 120, 60, 80, 18, 37, 97, 60])).astype(np.float32)
X_RAW[RNG.random(X_RAW.shape) < 0.3] = np.nan
MASK = ~np.isnan(X_RAW)
PREP = Preprocessor.fit(X_RAW)
X = PREP.to_model(X_RAW)
Y = np.r_[np.zeros(N - 10), np.ones(10)].astype(int)
SYN = {"ddpm": (X + 0.1, Y), "tardiff": (X * 0.9, Y)}
UTILITY = pd.DataFrame([{"task": t, "method": m, "alpha": a, "auroc_mean": 0.7 + 0.01 * a, "auroc_sd": 0.01,
                         "auprc_mean": 0.3, "auprc_sd": 0.02, "n_seeds": 3}
                        for t in ("mortality", "long_stay") for m, alphas in
                        (("real", (0.0,)), ("ddpm", (0.2, 1.0)), ("tardiff", (0.2, 1.0))) for a in alphas])
ABLATION = pd.DataFrame([{"task": "mortality", "method": m, "gru_auroc": 0.6 + 0.01 * i, "cnn_auroc": 0.6,
                          "f_theta_agreement": 0.5 + 0.05 * i} for i, m in enumerate(("cfg", "tardiff", "tardiff_dot"))])
GAINS = pd.DataFrame([{"task": t, "setting": f"{s}@{a:g}", "source": s, "alpha": a, "weight": 1.0,
                       "balance": "prevalence", "realism": 0.0, "downstream": "gru", "metric": m, "diff": 0.01 * a,
                       "ci_low": 0.01 * a - 0.02, "ci_high": 0.01 * a + 0.02}
                      for t in ("mortality", "long_stay") for s in ("cfg", "timegan") for a in (0.25, 1.0, 4.0)
                      for m in ("auroc", "auprc")])
HISTORY = {"train_loss": [0.6, 0.5, 0.45], "val_loss": [0.62, 0.55, 0.56], "val_auroc": [0.6, 0.7, 0.69],
           "val_auprc": [0.2, 0.3, 0.29], "best_epoch": 1}

CASES = {
    "trajectories": lambda p: plots.trajectories(X, Y, X * 0.9, Y, CHANNELS, p, preprocessor=PREP),
    "trajectories_model_space": lambda p: plots.trajectories(X, Y, X * 0.9, Y, CHANNELS, p, task="long_stay"),
    "pca": lambda p: plots.pca(X, SYN, p),
    "marginals": lambda p: plots.marginals(X, SYN, CHANNELS, p, preprocessor=PREP),
    "tsrtr_curves": lambda p: plots.tsrtr_curves(UTILITY, p),
    "ablation": lambda p: plots.ablation(ABLATION, p),
    "augmentation_gain": lambda p: plots.augmentation_gain(GAINS, p),
    "diffusion_loss": lambda p: plots.diffusion_loss(np.exp(-np.linspace(0, 3, 200)) + 0.05, p, window=20),
    "classifier_history": lambda p: plots.classifier_history(HISTORY, p, title="mortality"),
    "missingness": lambda p: plots.missingness(MASK, CHANNELS, p, title="set-a"),
    "distributions_by_label": lambda p: plots.distributions_by_label(X_RAW, Y, CHANNELS, p),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_plot_writes_png(name, tmp_path):
    path = tmp_path / "sub" / f"{name}.png"
    fig = CASES[name](path)
    try:
        assert isinstance(fig, plt.Figure)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    finally:
        plt.close(fig)


def test_method_colors_are_distinct_and_stable():
    assert len(set(plots.METHOD_COLORS.values())) == len(plots.METHOD_COLORS)
    assert plots.method_color("tardiff_scale2") == plots.method_color("tardiff_scale2")


def test_units_label_physical_axes(tmp_path):
    fig = plots.trajectories(X, Y, X, Y, CHANNELS, tmp_path / "t.png", preprocessor=PREP)
    try:
        assert "HR (bpm)" in [ax.get_ylabel() for ax in fig.axes]
    finally:
        plt.close(fig)
