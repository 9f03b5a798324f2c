"""Discrimination metrics and their uncertainty: AUROC, AUPRC, a vectorised bootstrap and seed-paired
differences. Below both the downstream evaluation (`tardiff.evaluate`) and fidelity (`tardiff.fidelity`)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


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
