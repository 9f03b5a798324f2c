"""Figures, one function per figure: each saves a PNG to `path` and returns the Figure.

Methods keep one colour everywhere (`METHOD_COLORS`). Values are drawn in physical
units (axis labels from `tardiff.stays.UNITS`) when a fitted `Preprocessor` is given,
else in model space (z-scores). `channels` names the last axis, so a user's own
dataset (channels f0, f1, ...) plots too.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.decomposition import PCA

from tardiff.stays import UNITS

METHOD_COLORS = {
    "real": "#333333",
    "ddpm": "#4C72B0",
    "cfg": "#55A868",
    "classifier_guidance": "#C44E52",
    "tardiff": "#DD8452",
    "timegan": "#8172B3",
    "timevae": "#937860",
    "timevqvae": "#DA8BC3",
    "diffusion_ts": "#8C8C8C",
    "biodiffusion": "#64B5CD",
}
METHOD_LABELS = {"real": "Real", "ddpm": "DDPM", "cfg": "CFG", "classifier_guidance": "Classifier guidance",
                 "tardiff": "TarDiff", "timegan": "TimeGAN", "timevae": "TimeVAE", "timevqvae": "TimeVQVAE",
                 "diffusion_ts": "Diffusion-TS", "biodiffusion": "BioDiffusion"}
LABEL_NAMES = {"mortality": ("survived", "died"), "long_stay": ("≤ 14 d", "> 14 d")}
_EXTRA = sns.color_palette("tab10", 10)


def method_color(method: str):
    """The method's colour; names outside METHOD_COLORS get a stable tab10 colour."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return _EXTRA[sum(map(ord, str(method))) % len(_EXTRA)]


def _name(method: str) -> str:
    return METHOD_LABELS.get(method, str(method))


def _axis_label(channel: str, physical: bool) -> str:
    if not physical:
        return f"{channel} (z-score)"
    unit = UNITS.get(str(channel))
    return f"{channel} ({unit})" if unit else str(channel)


def _style():
    sns.set_theme(style="whitegrid", context="notebook")


def _save(fig, path) -> plt.Figure:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _physical(X, preprocessor):
    return preprocessor.to_physical(X) if preprocessor is not None else np.asarray(X)


def _grid(n_panels: int, n_cols: int = 4, size=(3.2, 2.7)):
    n_cols = min(n_cols, n_panels)
    n_rows = int(np.ceil(n_panels / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size[0] * n_cols, size[1] * n_rows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, axes.flat


def trajectories(X_real, y_real, X_syn, y_syn, channels, path, preprocessor=None, title: str | None = None,
                 method: str = "tardiff", task: str = "mortality", n_individual: int = 3,
                 seed: int = 0) -> plt.Figure:
    """Per channel (rows) and label (columns): mean ± sd band of real and synthetic, plus a few single stays."""
    _style()
    rng = np.random.default_rng(seed)
    names = LABEL_NAMES.get(task, ("label 0", "label 1"))
    channels = list(channels)
    fig, axes = plt.subplots(len(channels), 2, figsize=(10, 2.1 * len(channels)), sharex=True, squeeze=False)
    for who, X, y in (("real", X_real, y_real), (method, X_syn, y_syn)):
        X, y = _physical(X, preprocessor), np.asarray(y)  # (N, T, F)
        hours = np.arange(X.shape[1])
        color = method_color(who)
        for col, label in enumerate((0, 1)):
            stays = X[y == label]
            if len(stays) == 0:
                continue
            mean, sd = stays.mean(axis=0), stays.std(axis=0)  # (T, F)
            pick = rng.choice(len(stays), min(n_individual, len(stays)), replace=False)
            for j, channel in enumerate(channels):
                ax = axes[j, col]
                ax.plot(hours, mean[:, j], color=color, lw=2, label=_name(who))
                ax.fill_between(hours, mean[:, j] - sd[:, j], mean[:, j] + sd[:, j], color=color, alpha=0.15)
                for i in pick:
                    ax.plot(hours, stays[i, :, j], color=color, lw=0.6, alpha=0.5)
                ax.set_ylabel(_axis_label(channel, preprocessor is not None) if col == 0 else "")
    for col, label in enumerate((0, 1)):
        counts = f"{int((np.asarray(y_real) == label).sum())} real, {int((np.asarray(y_syn) == label).sum())} " \
                 f"{_name(method)}"
        axes[0, col].set_title(f"{names[label]} ({counts})")
    for ax in axes[-1]:
        ax.set_xlabel("hour since admission")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title or f"{task}: real vs {_name(method)} (mean ± sd, thin lines: single stays)", y=1.02)
    fig.tight_layout()
    return _save(fig, path)


def pca(X_real, synthetic: dict, path, n_points: int = 1000, seed: int = 0, title: str | None = None) -> plt.Figure:
    """2-D PCA (fitted on real, stays flattened to T*F) of real and each synthetic set {method: (X, y)}."""
    _style()
    rng = np.random.default_rng(seed)
    X_real = np.asarray(X_real)
    fitted = PCA(n_components=2, random_state=seed).fit(X_real.reshape(len(X_real), -1))
    fig, ax = plt.subplots(figsize=(6, 5))
    for method, X in {"real": X_real, **{m: np.asarray(v[0]) for m, v in synthetic.items()}}.items():
        pick = rng.choice(len(X), min(n_points, len(X)), replace=False)
        z = fitted.transform(X[pick].reshape(len(pick), -1))  # (n, 2)
        ax.scatter(z[:, 0], z[:, 1], s=6, alpha=0.4, color=method_color(method), label=_name(method))
    ratio = fitted.explained_variance_ratio_
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%} of real variance)")
    ax.set_ylabel(f"PC2 ({ratio[1]:.0%} of real variance)")
    ax.set_title(title or "PCA of real and synthetic stays")
    ax.legend(markerscale=3)
    fig.tight_layout()
    return _save(fig, path)


def embedding_grid(X_real, synthetic: dict, path, n_points: int = 500, seed: int = 0,
                   title: str | None = None) -> plt.Figure:
    """One t-SNE panel per synthetic set {method: (X, y)}: `n_points` real and as many synthetic stays
    (flattened T*F), embedded together, as TimeGAN's and Diffusion-TS's papers draw them (perplexity 40)."""
    from sklearn.manifold import TSNE

    _style()
    rng = np.random.default_rng(seed)
    X_real = np.asarray(X_real)
    fig, axes = _grid(len(synthetic), n_cols=4, size=(3.2, 3.0))
    for ax, (method, (X, _)) in zip(axes, synthetic.items()):
        X = np.asarray(X)
        real = X_real[rng.choice(len(X_real), min(n_points, len(X_real)), replace=False)]
        syn = X[rng.choice(len(X), min(n_points, len(X)), replace=False)]
        both = np.concatenate([real, syn]).reshape(len(real) + len(syn), -1)
        z = TSNE(n_components=2, perplexity=min(40, len(both) - 1), init="pca", random_state=seed).fit_transform(both)
        ax.scatter(z[:len(real), 0], z[:len(real), 1], s=4, alpha=0.35, color=method_color("real"), label="real")
        ax.scatter(z[len(real):, 0], z[len(real):, 1], s=4, alpha=0.35, color=method_color(method), label=_name(method))
        ax.set_title(_name(method))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(markerscale=3, fontsize=8, loc="upper right")
    fig.suptitle(title or "t-SNE of real and synthetic stays")
    fig.tight_layout()
    return _save(fig, path)


def tstr_intervals(tstr: pd.DataFrame, path, order=None, labels=None, title: str | None = None) -> plt.Figure:
    """TSTR AUROC and AUPRC per method and task: the seed ensemble's value with its bootstrap CI (`tstr.csv`'s
    ensemble columns); real data's value as a dashed line."""
    _style()
    tasks = list(dict.fromkeys(tstr["task"]))
    order = [m for m in (order or dict.fromkeys(tstr["method"])) if m in set(tstr["method"])]
    labels = labels or {}
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 0.42 * len(order) * len(tasks) + 1.5), squeeze=False)
    for row, task in enumerate(tasks):
        sub = tstr[tstr["task"] == task].set_index("method")
        for col, metric in enumerate(("auroc", "auprc")):
            ax = axes[row][col]
            for i, method in enumerate(order):
                value = sub.loc[method, f"{metric}_ensemble"]
                low, high = sub.loc[method, f"{metric}_ci_low"], sub.loc[method, f"{metric}_ci_high"]
                ax.errorbar(value, i, xerr=[[value - low], [high - value]], fmt="o", color=method_color(method),
                            capsize=3)
            if "real" in sub.index:
                ax.axvline(sub.loc["real", f"{metric}_ensemble"], color=method_color("real"), ls="--", lw=1)
            ax.set_yticks(range(len(order)), [labels.get(m, _name(m)) for m in order] if col == 0 else [])
            ax.invert_yaxis()
            ax.set_xlabel(f"TSTR {metric.upper()} (seed ensemble, 95 % bootstrap CI)")
            ax.set_title(f"{task}: {metric.upper()}")
    fig.suptitle(title or "Train on synthetic, test on real (set-b)")
    fig.tight_layout()
    return _save(fig, path)


def marginals(X_real, synthetic: dict, channels, path, preprocessor=None, max_values: int = 20000,
              seed: int = 0, title: str | None = None) -> plt.Figure:
    """Per-channel density of all hourly values: real against each synthetic set {method: (X, y)}."""
    _style()
    rng = np.random.default_rng(seed)
    channels = list(channels)
    fig, axes = _grid(len(channels))
    for method, X in {"real": np.asarray(X_real), **{m: np.asarray(v[0]) for m, v in synthetic.items()}}.items():
        flat = _physical(X, preprocessor).reshape(-1, X.shape[-1])  # (N*T, F)
        flat = flat[rng.choice(len(flat), min(max_values, len(flat)), replace=False)]
        for j, channel in enumerate(channels):
            if np.ptp(flat[:, j]) > 0:
                sns.kdeplot(x=flat[:, j], ax=axes[j], color=method_color(method), label=_name(method), lw=1.5,
                            warn_singular=False)
            axes[j].set_xlabel(_axis_label(channel, preprocessor is not None))
            axes[j].set_ylabel("density" if j % 4 == 0 else "")
    axes[0].legend(fontsize=8)
    fig.suptitle(title or "Per-channel marginal distributions")
    fig.tight_layout()
    return _save(fig, path)


def _task_by_metric(tasks, draw, path, title: str | None, legend_size: int, legend_out: bool = False) -> plt.Figure:
    """One row per task, AUROC left and AUPRC right: `draw(ax, task, metric)` fills each panel."""
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 3.6 * len(tasks)), squeeze=False)
    for r, task in enumerate(tasks):
        for c, metric in enumerate(("auroc", "auprc")):
            draw(axes[r, c], task, metric)
        if legend_out:
            axes[r, 1].legend(fontsize=legend_size, loc="center left", bbox_to_anchor=(1.02, 0.5))
        else:
            axes[r, 0].legend(fontsize=legend_size)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def tsrtr_curves(df: pd.DataFrame, path, title: str | None = None) -> plt.Figure:
    """TSRTR AUROC and AUPRC against alpha per method (± sd over seeds); real-only as a dashed band."""
    _style()

    def draw(ax, task, metric):
        for method, rows in df[df["task"] == task].groupby("method", sort=False):
            rows = rows.sort_values("alpha")
            mean, sd, color = rows[f"{metric}_mean"], rows[f"{metric}_sd"], method_color(method)
            if method == "real":
                ax.axhline(mean.iloc[0], color=color, ls="--", label="Real only")
                ax.axhspan(mean.iloc[0] - sd.iloc[0], mean.iloc[0] + sd.iloc[0], color=color, alpha=0.08)
            else:
                ax.errorbar(rows["alpha"], mean, yerr=sd, color=color, marker="o", capsize=3, label=_name(method))
        ax.set_xlabel("α (synthetic stays per real training stay)")
        ax.set_ylabel(f"test {metric.upper()}")
        ax.set_title(f"{task}: real + α × synthetic")

    return _task_by_metric(list(dict.fromkeys(df["task"])), draw, path, title, legend_size=8)


def budget_curves(rows: pd.DataFrame, path, title: str | None = None) -> plt.Figure:
    """TSTR AUROC and AUPRC (seed ensemble, bootstrap CI) against the training budget, one line per generator;
    the `real` row as a dashed line and band (experiments/budget_curves.py)."""
    _style()

    multiples = sorted(rows["multiple"].dropna().unique())
    methods = [m for m in dict.fromkeys(rows["method"]) if m != "real"]

    def draw(ax, task, metric):
        for method, group in rows[rows["task"] == task].groupby("method", sort=False):
            group, color = group.sort_values("multiple"), method_color(method)
            mid, low, high = (group[f"{metric}_{k}"] for k in ("ensemble", "ci_low", "ci_high"))
            if method == "real":
                ax.axhline(mid.iloc[0], color=color, ls="--", label="Real")
                ax.axhspan(low.iloc[0], high.iloc[0], color=color, alpha=0.06)
                continue
            dodge = 2 ** (0.07 * (methods.index(method) - (len(methods) - 1) / 2))  # CIs side by side
            ax.errorbar(group["multiple"] * dodge, mid, yerr=[mid - low, high - mid], color=color, marker="o",
                        capsize=2, elinewidth=0.8, alpha=0.9, label=_name(method))
        ax.set_xscale("log", base=2)
        ax.set_xticks(multiples, [f"{m:g}×" for m in multiples])
        ax.minorticks_off()
        ax.set_xlabel("training budget (× the equal budget: cfg's fit)")
        ax.set_ylabel(f"validation {metric.upper()}")
        ax.set_title(f"{task}: train on synthetic, test on real validation")

    return _task_by_metric(list(dict.fromkeys(rows["task"])), draw, path, title, legend_size=7, legend_out=True)


def augmentation_gain(paired: pd.DataFrame, path, title: str | None = None) -> plt.Figure:
    """Seed-paired test gain over real only (GRU downstream) against alpha, one line per synthetic source with
    its 95 % bootstrap CI; the zero line is real only. Plain settings (weight 1, real prevalence, no filter)."""
    from tardiff.augment import plain_rows

    _style()
    plain = plain_rows(paired[paired["downstream"] == "gru"])

    def draw(ax, task, metric):
        rows = plain[(plain["task"] == task) & (plain["metric"] == metric)]
        sources = list(dict.fromkeys(rows["source"]))
        for k, (source, line) in enumerate(rows.groupby("source", sort=False)):
            line = line.sort_values("alpha")
            x = line["alpha"] * (1 + 0.03 * (k - len(sources) / 2))  # side by side, so the CIs stay readable
            ax.errorbar(x, line["diff"], yerr=[line["diff"] - line["ci_low"], line["ci_high"] - line["diff"]],
                        color=method_color(source), marker="o", capsize=3, label=_name(source))
        ax.axhline(0, color="black", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        alphas = sorted(rows["alpha"].unique())
        ax.set_xticks(alphas, [f"{a:g}" for a in alphas])
        ax.minorticks_off()
        ax.set_xlabel("α (synthetic stays per real training stay)")
        ax.set_ylabel(f"test {metric.upper()} − real only")
        ax.set_title(f"{task}: paired gain of real + α × synthetic")

    return _task_by_metric(list(dict.fromkeys(plain["task"])), draw, path, title, legend_size=7)


def ablation(df: pd.DataFrame, path, title: str | None = None) -> plt.Figure:
    """Left: TSTR AUROC per method with a GRU and a 1D-CNN downstream model. Right: f_theta's agreement with
    each set's labels against the GRU TSTR AUROC: guidance that fools f_theta moves right, not up."""
    _style()
    df = df.reset_index(drop=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.32 * len(df) + 2.2))
    ypos = np.arange(len(df))
    left.scatter(df["gru_auroc"], ypos, label="GRU downstream", color="C0")
    left.scatter(df["cnn_auroc"], ypos, label="1D-CNN downstream", color="C1", marker="s")
    left.set_yticks(ypos, [_name(m) for m in df["method"]])
    left.invert_yaxis()
    left.axvline(0.5, color="grey", ls=":", lw=1)
    left.set_xlabel("TSTR test AUROC (mean over seeds)")
    left.legend(fontsize=8)
    for _, row in df.iterrows():
        right.scatter(row["f_theta_agreement"], row["gru_auroc"], color=method_color(row["method"]))
        right.annotate(_name(row["method"]), (row["f_theta_agreement"], row["gru_auroc"]), fontsize=7,
                       xytext=(3, 2), textcoords="offset points")
    right.set_xlabel("f_θ AUROC against the set's labels")
    right.set_ylabel("TSTR test AUROC (GRU)")
    fig.suptitle(title or "What each variant does", y=1.0)
    fig.tight_layout()
    return _save(fig, path)


def diffusion_loss(losses, path, window: int = 50, log_every: int = 1, title: str | None = None,
                   loss_name: str = "L1") -> plt.Figure:
    """Diffusion training loss as logged (faint) and its moving average over `window` values."""
    _style()
    losses = np.asarray(losses, dtype=float)
    steps = np.arange(1, len(losses) + 1) * log_every
    window = max(1, min(window, len(losses)))
    smooth = pd.Series(losses).rolling(window, min_periods=1).mean().to_numpy()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(steps, losses, color="#999999", lw=0.6, alpha=0.6, label="logged")
    ax.plot(steps, smooth, color=METHOD_COLORS["tardiff"], lw=2, label=f"moving mean of {window}")
    if len(losses) and (losses > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"denoising loss ({loss_name} on ε)")
    ax.set_title(title or "Diffusion training loss")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def classifier_history(history: dict, path, title: str | None = None) -> plt.Figure:
    """Loss (train, validation) and validation AUROC/AUPRC per epoch, the selected epoch marked."""
    _style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    left.plot(epochs, history["train_loss"], marker="o", label="train")
    left.plot(epochs, history["val_loss"], marker="o", label="validation")
    left.set_ylabel("BCE loss")
    for key, label in (("val_auroc", "validation AUROC"), ("val_auprc", "validation AUPRC")):
        right.plot(epochs, history[key], marker="o", label=label)
    right.set_ylabel("score")
    for ax in (left, right):
        if history.get("best_epoch", -1) >= 0:
            ax.axvline(history["best_epoch"] + 1, color="#999999", ls="--", label="selected epoch")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.suptitle(title or "Classifier training")
    fig.tight_layout()
    return _save(fig, path)


def missingness(mask, channels, path, title: str | None = None) -> plt.Figure:
    """Heatmap: fraction of stays without a measurement, per hour (rows) and channel (columns)."""
    _style()
    mask = np.asarray(mask, dtype=bool)  # (N, T, F), True = observed
    missing = 1.0 - mask.mean(axis=0)    # (T, F)
    fig, ax = plt.subplots(figsize=(7, 7))
    sns.heatmap(pd.DataFrame(missing, columns=[str(c) for c in channels]), ax=ax, vmin=0, vmax=1, cmap="mako_r",
                cbar_kws={"label": "fraction of stays missing"})
    ax.set_xlabel("channel")
    ax.set_ylabel("hour since admission")
    ax.set_title(f"Missingness by hour and channel{f': {title}' if title else ''}")
    fig.tight_layout()
    return _save(fig, path)


def distributions_by_label(X_raw, y, channels, path, task: str = "mortality", max_values: int = 20000,
                           seed: int = 0, title: str | None = None) -> plt.Figure:
    """Real data in physical units: observed hourly values per channel, box plots by label."""
    _style()
    rng = np.random.default_rng(seed)
    X_raw, y = np.asarray(X_raw), np.asarray(y)
    names = LABEL_NAMES.get(task, ("label 0", "label 1"))
    channels = list(channels)
    fig, axes = _grid(len(channels))
    palette = {names[0]: "#4C72B0", names[1]: "#C44E52"}
    for j, channel in enumerate(channels):
        frames = []
        for label in (0, 1):
            values = X_raw[y == label][:, :, j].ravel()
            values = values[~np.isnan(values)]
            if len(values) > max_values:
                values = rng.choice(values, max_values, replace=False)
            frames.append(pd.DataFrame({"value": values, "label": names[label]}))
        data = pd.concat(frames, ignore_index=True)
        if len(data):
            sns.boxplot(data=data, x="label", y="value", hue="label", palette=palette, ax=axes[j],
                        showfliers=False, legend=False)
        axes[j].set_xlabel("")
        axes[j].set_ylabel(_axis_label(channel, True))
    fig.suptitle(title or f"Observed values by {task} label (real data, physical units)")
    fig.tight_layout()
    return _save(fig, path)
