"""Downstream utility (TSTR / TSRTR), fidelity and privacy of synthetic stays.

Everything takes arrays in model space: X (N, T, F) float32, y (N,) 0/1. A
"method" is just a name mapped to a synthetic set {method: (X_syn, y_syn)}.

Downstream protocol and its noise. The real validation split holds ~55 deaths,
so early stopping on its AUPRC picks a near-random epoch and the seed-to-seed sd
(.03 AUROC) exceeds the effects the tables compare (.01-.02). Here, by default:
(1) model selection monitors validation *loss* (every stay contributes, smooth in
the epoch), (2) every number is over `n_seeds` >= 3 re-trainings (mean ± sd), and
(3) the test predictions of the seeds are averaged and that ensemble gets a
percentile bootstrap CI, whose spread no longer includes the seed lottery.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn

from tardiff.config import ALPHAS
from tardiff.utils import get_device

UTILITY_COLUMNS = ("task", "method", "auroc_mean", "auroc_sd", "auprc_mean", "auprc_sd", "n_seeds")
TSTR_COLUMNS = UTILITY_COLUMNS
TSRTR_COLUMNS = UTILITY_COLUMNS + ("alpha",)

SyntheticSets = dict  # {method: (X_syn (N, T, F), y_syn (N,))}


# --------------------------------------------------------------------------- metrics

def auroc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p))


def auprc(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision (sklearn's step-wise area under the precision-recall curve)."""
    return float(average_precision_score(y, p))


def _auroc_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """AUROC of every row of (B, n) labels/scores at once (Mann-Whitney with mid-ranks); NaN if one class."""
    order = np.argsort(p, axis=1, kind="stable")
    p_sorted = np.take_along_axis(p, order, axis=1)
    y_sorted = np.take_along_axis(y, order, axis=1).astype(np.float64)
    b, n = p.shape
    pos = np.broadcast_to(np.arange(n), (b, n))
    # mid-rank of a tie group = mean of its first and last 1-based position
    starts = np.where(np.diff(p_sorted, axis=1, prepend=np.nan) != 0, pos, 0)
    starts = np.maximum.accumulate(starts, axis=1)
    ends = np.where(np.diff(p_sorted, axis=1, append=np.nan) != 0, pos, n)
    ends = np.minimum.accumulate(ends[:, ::-1], axis=1)[:, ::-1]
    ranks = (starts + ends) / 2.0 + 1.0
    n_pos = y_sorted.sum(axis=1)
    n_neg = n - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * y_sorted).sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _auprc_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Average precision of every row of (B, n) labels/scores at once (ties as in sklearn); NaN if no positive."""
    order = np.argsort(-p, axis=1, kind="stable")
    p_sorted = np.take_along_axis(p, order, axis=1)
    y_sorted = np.take_along_axis(y, order, axis=1).astype(np.float64)
    b, n = p.shape
    tp = np.cumsum(y_sorted, axis=1)
    precision = tp / np.arange(1, n + 1)
    # a positive's precision is read at the end of its tie group (sklearn's thresholds are distinct scores)
    ends = np.where(np.diff(p_sorted, axis=1, append=np.nan) != 0, np.arange(n), n)
    ends = np.minimum.accumulate(ends[:, ::-1], axis=1)[:, ::-1]
    precision_at_end = np.take_along_axis(precision, ends, axis=1)
    n_pos = y_sorted.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (y_sorted * precision_at_end).sum(axis=1) / np.where(n_pos > 0, n_pos, np.nan)


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUROC, AUPRC, stays and positives of one set of predictions."""
    y = np.asarray(y)
    return {"auroc": auroc(y, p), "auprc": auprc(y, p), "n": int(len(y)), "positives": int((y == 1).sum())}


def bootstrap_ci(y: np.ndarray, p: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                 chunk: int = 250) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CI of AUROC and AUPRC over test stays: {"auroc": (low, high), "auprc": ...}.

    Vectorised: each chunk draws an index matrix (chunk, n) and scores all its rows at once.
    Resamples with a single class are dropped.
    """
    y = np.asarray(y).astype(np.int64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y and p must be 1-D of the same length, got {y.shape} and {p.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    scores = {"auroc": [], "auprc": []}
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, len(y), size=(min(chunk, n_boot - start), len(y)))  # (chunk, n)
        yb, pb = y[idx], p[idx]
        scores["auroc"].append(_auroc_rows(yb, pb))
        scores["auprc"].append(_auprc_rows(yb, pb))
    tail = 100.0 * (1.0 - level) / 2.0
    out = {}
    for name, values in scores.items():
        values = np.concatenate(values)
        low, high = np.nanpercentile(values, [tail, 100.0 - tail])
        out[name] = (float(low), float(high))
    return out


# --------------------------------------------------------------------------- data handling

def drop_unknown(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows labelled -1 (unknown, e.g. long stay without a discharge time) removed; returns their count."""
    y = np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} stays but y has {len(y)} labels")
    known = y >= 0
    bad = set(np.unique(y[known]).tolist()) - {0, 1}
    if bad:
        raise ValueError(f"labels must be 0, 1 or -1 (unknown), found {sorted(bad)}")
    return np.asarray(X, dtype=np.float32)[known], y[known].astype(np.int64), int((~known).sum())


@dataclass
class RealSplits:
    """Real train / validation / test of one task; unknown labels (-1) are dropped and counted in `excluded`.

    Test (PhysioNet set-b) is only ever scored; model selection uses validation.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    excluded: dict = field(default_factory=dict)

    def __post_init__(self):
        for split in ("train", "val", "test"):
            X, y, n = drop_unknown(getattr(self, f"X_{split}"), getattr(self, f"y_{split}"))
            if len(np.unique(y)) < 2:
                raise ValueError(f"real {split} split has a single label after dropping unknowns; "
                                 "AUROC/AUPRC need both classes")
            setattr(self, f"X_{split}", X)
            setattr(self, f"y_{split}", y)
            self.excluded[split] = self.excluded.get(split, 0) + n

    @property
    def n_excluded(self) -> int:
        return int(sum(self.excluded.values()))


def as_real_splits(real) -> RealSplits:
    """A RealSplits from anything with X_/y_ train, val, test (e.g. `tardiff.pipeline.RealData`).

    Unknown labels already dropped upstream (`dropped` keys ending in `unknown_label`) still count.
    """
    if isinstance(real, RealSplits):
        return real
    try:
        arrays = {f"{a}_{s}": getattr(real, f"{a}_{s}") for s in ("train", "val", "test") for a in ("X", "y")}
    except AttributeError as error:
        raise TypeError(f"real data needs X_train, y_train, X_val, y_val, X_test, y_test ({error})") from None
    upstream = {k: int(v) for k, v in (getattr(real, "dropped", None) or {}).items() if k.endswith("unknown_label")}
    return RealSplits(**arrays, excluded=upstream)


def _check_synthetic(method: str, X: np.ndarray, y: np.ndarray, shape_tf: tuple) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    if X.ndim != 3 or X.shape[1:] != shape_tf:
        raise ValueError(f"synthetic set {method!r} has shape {X.shape}; real stays are (N, {shape_tf[0]}, "
                         f"{shape_tf[1]})")
    if len(X) != len(y):
        raise ValueError(f"synthetic set {method!r}: {len(X)} stays but {len(y)} labels")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError(f"synthetic set {method!r}: labels must be 0/1 (use pseudo_label for an "
                         f"unconditional set), found {sorted(set(np.unique(y).tolist()))}")
    if not np.isfinite(X).all():
        raise ValueError(f"synthetic set {method!r} contains NaN/inf values")
    return X, y.astype(np.int64)


def pseudo_label(proba: np.ndarray, counts) -> np.ndarray:
    """0/1 labels for an unconditional sample set: the top-k probabilities get label 1.

    An unconditional, unguided model (`ddpm`) has no label to give its samples, so the
    downstream classifier trained on real data scores them and the k most likely are
    called positive, k chosen so the label proportions match the real training set
    (`counts` = (n_negative, n_positive) there, or a {0: n0, 1: n1} dict). Rank-matching
    keeps prevalence exact, where thresholding at 0.5 would label almost nobody positive.
    """
    proba = np.asarray(proba, dtype=np.float64).ravel()
    if isinstance(counts, dict):
        n0, n1 = int(counts.get(0, 0)), int(counts.get(1, 0))
    else:
        n0, n1 = (int(c) for c in counts)
    if n0 < 0 or n1 < 0 or n0 + n1 == 0:
        raise ValueError(f"counts must be two non-negative label counts, got {(n0, n1)}")
    k = int(round(len(proba) * n1 / (n0 + n1)))
    labels = np.zeros(len(proba), dtype=np.int64)
    labels[np.argsort(-proba, kind="stable")[:k]] = 1
    return labels


def stratified_subsample(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of `n` rows drawn without replacement that keep the per-label proportions of `y`."""
    y = np.asarray(y)
    if n > len(y):
        raise ValueError(f"asked for {n} synthetic stays but the set holds {len(y)}; generate at least "
                         f"alpha * n_real_train stays")
    labels, sizes = np.unique(y, return_counts=True)
    exact = n * sizes / len(y)
    take = np.floor(exact).astype(int)
    # largest remainder, so the counts sum to n exactly
    take[np.argsort(-(exact - take), kind="stable")[: n - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(y == label), size=k, replace=False) for label, k in zip(labels, take)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=int)


# --------------------------------------------------------------------------- downstream protocol

def _default_train_config():
    from tardiff.classifier import TrainConfig

    # Validation loss, not the AUPRC of ~55 positives: see the module docstring.
    return TrainConfig(lr=1e-3, batch_size=256, max_epochs=40, patience=5, monitor="loss")


def _default_classifier_config():
    from tardiff.classifier import ClassifierConfig

    return ClassifierConfig()


@dataclass
class EvalConfig:
    """How the downstream classifier is trained and scored for TSTR / TSRTR."""

    classifier: Any = field(default_factory=_default_classifier_config)  # ClassifierConfig
    train: Any = field(default_factory=_default_train_config)            # TrainConfig (monitor="loss")
    n_seeds: int = 3
    seed: int = 0
    n_boot: int = 1000
    ci_level: float = 0.95
    device: str | None = None
    progress: bool = False

    def __post_init__(self):
        if self.n_seeds < 1:
            raise ValueError(f"n_seeds must be >= 1, got {self.n_seeds}")

    @classmethod
    def from_profile(cls, profile, **overrides) -> "EvalConfig":
        """From a `tardiff.config.Profile` (eval_classifier, eval_train, n_seeds, bootstrap)."""
        return replace(cls(classifier=profile.eval_classifier, train=profile.eval_train,
                           n_seeds=profile.n_seeds, n_boot=profile.bootstrap), **overrides)


def _resolve(train_fn, predict_fn):
    if train_fn is None or predict_fn is None:
        from tardiff import classifier

        train_fn = train_fn or classifier.train_classifier
        predict_fn = predict_fn or classifier.predict_proba
    return train_fn, predict_fn


def _downstream(make_train_set: Callable[[int], tuple], real, config: EvalConfig,
                train_fn, predict_fn) -> dict:
    """Train on `make_train_set(seed)` for each seed, select on real validation, score on real test."""
    probas, n_train = [], []
    for i in range(config.n_seeds):
        X_tr, y_tr = make_train_set(config.seed + i)
        one = replace(config, seed=config.seed + i, n_seeds=1)
        probas.append(predict_seeds(fit_downstream(X_tr, y_tr, real, one, train_fn), real.X_test, one, predict_fn)[0])
        n_train.append(len(y_tr))
    return {**utility(real.y_test, np.stack(probas), config), "n_train": int(np.mean(n_train)),
            "n_test": len(real.y_test), "n_excluded": real.n_excluded}


def fit_downstream(X_train, y_train, real, config: EvalConfig, train_fn=None) -> list:
    """The n_seeds downstream models trained on one set (selected on real validation), kept for scoring
    any split later: validation first (selection), test only once the selection is written."""
    train_fn, _ = _resolve(train_fn, None)
    device = get_device(config.device)
    return [train_fn(X_train, y_train, real.X_val, real.y_val, config=config.classifier, train=config.train,
                     seed=config.seed + i, device=device, progress=False)[0] for i in range(config.n_seeds)]


def predict_seeds(models: list, X, config: EvalConfig, predict_fn=None) -> np.ndarray:
    """(n_seeds, N) P(y=1) of each seed's model."""
    _, predict_fn = _resolve(None, predict_fn)
    device = get_device(config.device)
    return np.stack([np.asarray(predict_fn(m, X, device=device), dtype=np.float64) for m in models])


def utility(y, probas: np.ndarray, config: EvalConfig) -> dict:
    """Mean ± sd over seeds of AUROC/AUPRC, and the seed ensemble's AUROC/AUPRC with a bootstrap CI."""
    y = np.asarray(y)
    per_seed = np.array([(auroc(y, p), auprc(y, p)) for p in probas])  # (n_seeds, 2)
    ddof = 1 if len(per_seed) > 1 else 0
    ensemble = probas.mean(axis=0)
    ci = bootstrap_ci(y, ensemble, n_boot=config.n_boot, level=config.ci_level, seed=config.seed)
    return {"auroc_mean": per_seed[:, 0].mean(), "auroc_sd": per_seed[:, 0].std(ddof=ddof),
            "auprc_mean": per_seed[:, 1].mean(), "auprc_sd": per_seed[:, 1].std(ddof=ddof),
            "n_seeds": len(probas), "auroc_ensemble": auroc(y, ensemble), "auroc_ci_low": ci["auroc"][0],
            "auroc_ci_high": ci["auroc"][1], "auprc_ensemble": auprc(y, ensemble),
            "auprc_ci_low": ci["auprc"][0], "auprc_ci_high": ci["auprc"][1]}


def paired_difference(y, probas: np.ndarray, baseline: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                      seed: int = 0, chunk: int = 100) -> dict[str, tuple[float, float, float]]:
    """Seed-paired difference in AUROC and AUPRC (method − baseline), mean over seeds, with a percentile
    bootstrap CI over test stays: {"auroc": (diff, low, high), "auprc": ...}.

    Seed s of the method is paired with seed s of the baseline (same initialisation and batch order), and
    each bootstrap resample scores both on the same stays, so what the test set shares cancels.
    """
    y = np.asarray(y).astype(np.int64)
    probas, baseline = np.atleast_2d(probas), np.atleast_2d(baseline)
    if probas.shape != baseline.shape or probas.shape[1] != len(y):
        raise ValueError(f"need (n_seeds, {len(y)}) predictions for both, got {probas.shape} and {baseline.shape}")
    metric_rows = {"auroc": _auroc_rows, "auprc": _auprc_rows}
    point = {name: float(np.mean([fn(y[None], p[None])[0] - fn(y[None], b[None])[0]
                                  for p, b in zip(probas, baseline)])) for name, fn in metric_rows.items()}
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in metric_rows}
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, len(y), size=(min(chunk, n_boot - start), len(y)))
        yb = y[idx]
        for name, fn in metric_rows.items():
            diffs = [fn(yb, p[idx]) - fn(yb, b[idx]) for p, b in zip(probas, baseline)]
            draws[name].append(np.mean(diffs, axis=0))
    tail = 100.0 * (1.0 - level) / 2.0
    out = {}
    for name, values in draws.items():
        low, high = np.nanpercentile(np.concatenate(values), [tail, 100.0 - tail])
        out[name] = (point[name], float(low), float(high))
    return out


def tstr(synthetic: SyntheticSets, real, task: str, config: EvalConfig | None = None,
         include_real: bool = True, train_fn=None, predict_fn=None) -> pd.DataFrame:
    """Train on synthetic only, select on real validation, test on real test; plus a `real` (TRTR) row.

    `train_fn`/`predict_fn` default to `tardiff.classifier.train_classifier`/`predict_proba`.
    """
    config, real = config or EvalConfig(), as_real_splits(real)
    rows = []
    if include_real:
        row = _downstream(lambda s: (real.X_train, real.y_train), real, config, train_fn, predict_fn)
        rows.append({"task": task, "method": "real", **row, "n_synthetic": 0})
    for method, (X_syn, y_syn) in synthetic.items():
        X_syn, y_syn = _check_synthetic(method, X_syn, y_syn, real.X_train.shape[1:])
        row = _downstream(lambda s: (X_syn, y_syn), real, config, train_fn, predict_fn)
        rows.append({"task": task, "method": str(method), **row, "n_synthetic": len(y_syn)})
    return _ordered(pd.DataFrame(rows), TSTR_COLUMNS)


def tsrtr(synthetic: SyntheticSets, real, task: str, alphas=ALPHAS, config: EvalConfig | None = None,
          include_real: bool = True, train_fn=None, predict_fn=None) -> pd.DataFrame:
    """Real train + alpha x synthetic (a seeded, label-stratified subsample of round(alpha * n_real)).

    Each seed draws its own subsample, so the sd includes which synthetic stays were picked.
    The `real` row (alpha = 0) trains on real only.
    """
    config, real = config or EvalConfig(), as_real_splits(real)
    n_real = len(real.y_train)
    rows = []
    if include_real:
        row = _downstream(lambda s: (real.X_train, real.y_train), real, config, train_fn, predict_fn)
        rows.append({"task": task, "method": "real", "alpha": 0.0, **row, "n_synthetic": 0})
    for method, (X_syn, y_syn) in synthetic.items():
        X_syn, y_syn = _check_synthetic(method, X_syn, y_syn, real.X_train.shape[1:])
        for alpha in alphas:
            n_syn = int(round(alpha * n_real))

            def make(seed, X_syn=X_syn, y_syn=y_syn, n_syn=n_syn):
                idx = stratified_subsample(y_syn, n_syn, seed)
                return (np.concatenate([real.X_train, X_syn[idx]]), np.concatenate([real.y_train, y_syn[idx]]))

            if n_syn > len(y_syn):  # fail before any training
                stratified_subsample(y_syn, n_syn, 0)
            row = _downstream(make, real, config, train_fn, predict_fn)
            rows.append({"task": task, "method": str(method), "alpha": float(alpha), **row, "n_synthetic": n_syn})
    return _ordered(pd.DataFrame(rows), TSRTR_COLUMNS)


def _ordered(df: pd.DataFrame, first: tuple) -> pd.DataFrame:
    return df[list(first) + [c for c in df.columns if c not in first]]


# --------------------------------------------------------------------------- tables

def _markdown(df: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    lines = [header, rule]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_cell(v) for v in row.values) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def paper_layout(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = methods (and alpha), columns = task x metric, cells "mean ± sd" as in the paper's tables."""
    index = ["method", "alpha"] if "alpha" in df.columns else ["method"]
    cells = df.copy()
    for metric in ("auroc", "auprc"):
        cells[metric.upper()] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(df[f"{metric}_mean"], df[f"{metric}_sd"])]
    wide = cells.pivot_table(index=index, columns="task", values=["AUROC", "AUPRC"], aggfunc="first", sort=False)
    wide = wide.swaplevel(0, 1, axis=1)
    tasks = list(dict.fromkeys(df["task"]))
    wide = wide.reindex(columns=[(t, m) for t in tasks for m in ("AUROC", "AUPRC")])
    wide.columns = [f"{t} {m}" for t, m in wide.columns]
    return wide.reset_index()


def write_tables(df: pd.DataFrame, out_dir, name: str) -> tuple[Path, Path]:
    """Write `out_dir/name.csv` and `out_dir/name.md` (utility tables in the paper's layout)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{name}.csv", out_dir / f"{name}.md"
    is_utility = set(UTILITY_COLUMNS) <= set(df.columns)
    if is_utility:
        df = _ordered(df, TSRTR_COLUMNS if "alpha" in df.columns else TSTR_COLUMNS)
    for path, write in ((csv_path, lambda p: df.to_csv(p, index=False)),
                        (md_path, lambda p: p.write_text(_markdown(paper_layout(df) if is_utility else df)))):
        tmp = path.with_name(path.name + ".tmp")
        write(tmp)
        tmp.replace(path)  # atomic: a failure never leaves a half-written table
    return csv_path, md_path


# --------------------------------------------------------------------------- fidelity

@dataclass
class FidelityConfig:
    """Post-hoc networks for the discriminative and predictive scores (TimeGAN-style, small on purpose)."""

    hidden: int = 32
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    max_lag: int = 5
    seed: int = 0
    device: str | None = None


class _PostHocGRU(nn.Module):
    def __init__(self, n_in: int, hidden: int, n_out: int, per_step: bool):
        super().__init__()
        self.rnn = nn.GRU(n_in, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_out)
        self.per_step = per_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)  # (B, T, H)
        return self.out(h) if self.per_step else self.out(h[:, -1]).squeeze(-1)


def _fit(model: nn.Module, X: np.ndarray, target: np.ndarray, loss_fn, config: FidelityConfig, device) -> nn.Module:
    rng = np.random.default_rng(config.seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    X_t = torch.as_tensor(X, dtype=torch.float32, device=device)
    y_t = torch.as_tensor(target, dtype=torch.float32, device=device)
    for _ in range(config.epochs):
        order = torch.as_tensor(rng.permutation(len(X)), device=device)
        for start in range(0, len(X), config.batch_size):
            batch = order[start:start + config.batch_size]
            loss = loss_fn(model(X_t[batch]), y_t[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def _apply(model: nn.Module, X: np.ndarray, device, batch_size: int = 2048) -> np.ndarray:
    X_t = torch.as_tensor(X, dtype=torch.float32)
    return torch.cat([model(X_t[i:i + batch_size].to(device)).cpu() for i in range(0, len(X), batch_size)]).numpy()


def discriminative_score(X_real: np.ndarray, X_syn: np.ndarray, config: FidelityConfig | None = None) -> float:
    """|accuracy - 0.5| of a small GRU told real from synthetic, scored on a held-out half (0 = indistinguishable).

    Pass real stays the generator never saw (validation/test): a synthetic copy of a training
    stay would otherwise sit on both sides of the discriminator's split with opposite labels,
    and its memorisation would push accuracy below 0.5, i.e. the score away from 0.
    """
    config = config or FidelityConfig()
    device = get_device(config.device)
    rng = np.random.default_rng(config.seed)
    n = min(len(X_real), len(X_syn))
    if n < 4:
        raise ValueError(f"need at least 4 real and 4 synthetic stays, got {len(X_real)} and {len(X_syn)}")
    real = np.asarray(X_real, np.float32)[rng.choice(len(X_real), n, replace=False)]
    syn = np.asarray(X_syn, np.float32)[rng.choice(len(X_syn), n, replace=False)]
    half = n // 2  # first half of each (shuffled) set trains, second half tests
    X_fit = np.concatenate([real[:half], syn[:half]])
    y_fit = np.r_[np.ones(half), np.zeros(half)]
    X_held = np.concatenate([real[half:], syn[half:]])
    y_held = np.r_[np.ones(n - half), np.zeros(n - half)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = _PostHocGRU(X_fit.shape[-1], config.hidden, 1, per_step=False)
        _fit(model, X_fit, y_fit, nn.functional.binary_cross_entropy_with_logits, config, device)
    accuracy = float(((_apply(model, X_held, device) > 0) == (y_held == 1)).mean())
    return abs(accuracy - 0.5)


def discriminative_scores(X_real: np.ndarray, X_syn: np.ndarray, config: FidelityConfig | None = None,
                          n_seeds: int = 3) -> tuple[float, float]:
    """Mean and sd over `n_seeds` discriminators (each its own init, split and batch order)."""
    config = config or FidelityConfig()
    scores = [discriminative_score(X_real, X_syn, replace(config, seed=config.seed + i)) for i in range(n_seeds)]
    return float(np.mean(scores)), float(np.std(scores, ddof=1) if n_seeds > 1 else 0.0)


def predictive_score(X_syn: np.ndarray, X_real_test: np.ndarray, config: FidelityConfig | None = None) -> float:
    """MAE on real test of a small GRU trained on synthetic to predict step t+1 (all channels) from steps <= t."""
    config = config or FidelityConfig()
    device = get_device(config.device)
    X_syn = np.asarray(X_syn, np.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = _PostHocGRU(X_syn.shape[-1], config.hidden, X_syn.shape[-1], per_step=True)
        _fit(model, X_syn[:, :-1], X_syn[:, 1:], nn.functional.l1_loss, config, device)
    X_real_test = np.asarray(X_real_test, np.float32)
    pred = _apply(model, X_real_test[:, :-1], device)  # (N, T-1, F)
    return float(np.abs(pred - X_real_test[:, 1:]).mean())


def marginal_distance(X_real: np.ndarray, X_syn: np.ndarray) -> np.ndarray:
    """(F,) 1-D Wasserstein distance between real and synthetic values of each channel (all hours pooled)."""
    from scipy.stats import wasserstein_distance

    f = X_real.shape[-1]
    real, syn = np.asarray(X_real).reshape(-1, f), np.asarray(X_syn).reshape(-1, f)
    return np.array([wasserstein_distance(real[:, j], syn[:, j]) for j in range(f)])


def autocorrelation(X: np.ndarray, max_lag: int = 5) -> np.ndarray:
    """(max_lag, F) lag-1..max_lag autocorrelation per channel, pooled over stays (dataset mean and variance)."""
    X = np.asarray(X, dtype=np.float64)
    if not 1 <= max_lag < X.shape[1]:
        raise ValueError(f"max_lag must be in [1, T-1] = [1, {X.shape[1] - 1}], got {max_lag}")
    centred = X - X.mean(axis=(0, 1))
    var = (centred ** 2).mean(axis=(0, 1))
    var = np.where(var > 1e-12, var, 1.0)
    return np.stack([(centred[:, k:] * centred[:, :-k]).mean(axis=(0, 1)) / var for k in range(1, max_lag + 1)])


def autocorrelation_distance(X_real: np.ndarray, X_syn: np.ndarray, max_lag: int = 5) -> float:
    """Mean absolute difference of per-channel lag-1..max_lag autocorrelations."""
    return float(np.abs(autocorrelation(X_real, max_lag) - autocorrelation(X_syn, max_lag)).mean())


def fidelity_table(synthetic: SyntheticSets, X_real_train: np.ndarray, X_real_test: np.ndarray,
                   config: FidelityConfig | None = None, channels=None, n_seeds: int = 3) -> pd.DataFrame:
    """One row per method: discriminative (vs real test, mean and sd over `n_seeds` discriminators, all
    stays), predictive (MAE on real test), marginal distance (mean and per channel, vs real train) and
    autocorrelation distance (vs real train). One protocol for every table."""
    from tardiff.stays import CHANNELS

    config = config or FidelityConfig()
    n_channels = np.shape(X_real_train)[-1]
    if channels is None:
        channels = CHANNELS if n_channels == len(CHANNELS) else [f"f{j}" for j in range(n_channels)]
    rows = []
    for method, (X_syn, _) in synthetic.items():
        marginal = marginal_distance(X_real_train, X_syn)
        disc_mean, disc_sd = discriminative_scores(X_real_test, X_syn, config, n_seeds)
        rows.append({"method": str(method),
                     "discriminative_score": disc_mean, "discriminative_sd": disc_sd,
                     "predictive_score": predictive_score(X_syn, X_real_test, config),
                     "marginal_distance": float(marginal.mean()),
                     "autocorrelation_distance": autocorrelation_distance(X_real_train, X_syn, config.max_lag),
                     **{f"marginal_{c}": float(d) for c, d in zip(channels, marginal)}})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- privacy

def nearest_distance(A: np.ndarray, B: np.ndarray, chunk: int = 1024, device=None) -> np.ndarray:
    """(len(A),) Euclidean distance from each stay of A to its closest stay in B (flattened T*F), by chunks."""
    device = get_device(device)
    a = torch.as_tensor(np.asarray(A).reshape(len(A), -1), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(B).reshape(len(B), -1), dtype=torch.float64, device=device)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"stays differ in size: {tuple(A.shape[1:])} vs {tuple(B.shape[1:])}")
    out = []
    for i in range(0, len(a), chunk):
        rows = a[i:i + chunk].to(device)
        nearest = torch.cdist(rows, b).argmin(dim=1)  # fast matmul form finds the neighbour...
        out.append((rows - b[nearest]).norm(dim=1).cpu())  # ...the direct form measures it: copies read 0
    return torch.cat(out).numpy()


def dcr(X_syn: np.ndarray, X_train: np.ndarray, X_holdout: np.ndarray, device=None) -> dict[str, float]:
    """Distance to closest training record of synthetic vs held-out real stays; ratio < 1 hints at copying."""
    syn = nearest_distance(X_syn, X_train, device=device)
    hold = nearest_distance(X_holdout, X_train, device=device)
    median_hold = float(np.median(hold))
    return {"dcr_syn_median": float(np.median(syn)), "dcr_syn_p5": float(np.percentile(syn, 5)),
            "dcr_holdout_median": median_hold, "dcr_holdout_p5": float(np.percentile(hold, 5)),
            "dcr_ratio": float(np.median(syn)) / median_hold if median_hold > 0 else np.nan}


def membership_inference_auc(X_syn: np.ndarray, X_members: np.ndarray, X_nonmembers: np.ndarray,
                             seed: int = 0, device=None) -> float:
    """AUC of telling training stays from held-out ones by -distance to the closest synthetic stay (0.5 = no leak).

    The larger group is subsampled (seeded) to the size of the smaller one, so the AUC is balanced.
    """
    rng = np.random.default_rng(seed)
    n = min(len(X_members), len(X_nonmembers))
    members = np.asarray(X_members)[rng.choice(len(X_members), n, replace=False)]
    nonmembers = np.asarray(X_nonmembers)[rng.choice(len(X_nonmembers), n, replace=False)]
    score = -nearest_distance(np.concatenate([members, nonmembers]), X_syn, device=device)
    return auroc(np.r_[np.ones(n), np.zeros(n)], score)


def privacy_table(synthetic: SyntheticSets, X_train: np.ndarray, X_holdout: np.ndarray, seed: int = 0,
                  device=None) -> pd.DataFrame:
    """One row per method: DCR (median, 5th percentile, ratio to held-out real) and membership-inference AUC."""
    rows = []
    for method, (X_syn, _) in synthetic.items():
        rows.append({"method": str(method), **dcr(X_syn, X_train, X_holdout, device=device),
                     "mia_auc": membership_inference_auc(X_syn, X_train, X_holdout, seed=seed, device=device)})
    return pd.DataFrame(rows)
