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


def _resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, n) how often each of n stays appears in each of B resamples (B, m) of indices into them."""
    b = idx.shape[0]
    return np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)


def _tie_group_counts(y: np.ndarray, p: np.ndarray, counts: np.ndarray, descending: bool):
    """Per resample (B) and run of equal scores (in score order), the positives drawn and all stays drawn:
    two (B, groups) integer arrays. p is sorted once for every resample."""
    order = np.argsort(-p if descending else p, kind="stable")
    starts = np.flatnonzero(np.diff(p[order], prepend=np.nan) != 0)
    w = counts[:, order]
    return np.add.reduceat(w * y[order], starts, axis=1), np.add.reduceat(w, starts, axis=1)


def _auroc_counts(y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUROC of each resample given as stay counts (B, n) over y, p (n,); NaN if one class.

    A resample repeats stays, so it needs no sort of its own: p is sorted once, and per tie group of scores
    the Mann-Whitney U sums positives x (negatives below + ½ negatives tied). U is a half-integer, exact in
    float64, so this equals the mid-rank formula on the materialised resample to the last bit.
    """
    pos, total = _tie_group_counts(y, p, counts, descending=False)
    neg = total - pos
    neg_below = np.cumsum(neg, axis=1) - neg
    u_twice = (pos * (2 * neg_below + neg)).sum(axis=1)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (u_twice / 2.0) / (n_pos * n_neg).astype(np.float64)


def _auprc_counts(y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average precision (ties as in sklearn) of each resample given as stay counts (B, n); NaN if no positive.

    Scores sorted once, descending; a positive's precision is read at the end of its tie group (sklearn's
    thresholds are distinct scores): AP = Σ_groups positives x TP/N at the group's end, / positives.
    """
    pos, total = _tie_group_counts(y, p, counts, descending=True)
    precision = np.cumsum(pos, axis=1) / np.maximum(np.cumsum(total, axis=1), 1)  # 0 where nothing drawn yet
    n_pos = pos.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * precision).sum(axis=1) / np.where(n_pos > 0, n_pos, np.nan)


def _checked(y, p) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y).astype(np.int64), np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y and p must be 1-D of the same length, got {y.shape} and {p.shape}")
    return y, p


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUROC, AUPRC, stays and positives of one set of predictions."""
    y = np.asarray(y)
    return {"auroc": auroc(y, p), "auprc": auprc(y, p), "n": int(len(y)), "positives": int((y == 1).sum())}


def bootstrap_ci(y: np.ndarray, p: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                 chunk: int = 250) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CI of AUROC and AUPRC over test stays: {"auroc": (low, high), "auprc": ...}.

    Vectorised: each chunk draws an index matrix (chunk, n) and scores all its rows at once, as stay counts
    (no sort per resample). Resamples with a single class are dropped.
    """
    y, p = _checked(y, p)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    scores = {"auroc": [], "auprc": []}
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, len(y), size=(min(chunk, n_boot - start), len(y)))  # (chunk, n)
        counts = _resample_counts(idx, len(y))
        scores["auroc"].append(_auroc_counts(y, p, counts))
        scores["auprc"].append(_auprc_counts(y, p, counts))
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
    metric_counts = {"auroc": _auroc_counts, "auprc": _auprc_counts}
    everyone = np.ones((1, len(y)), dtype=np.int64)
    point = {name: float(np.mean([fn(y, p, everyone)[0] - fn(y, b, everyone)[0]
                                  for p, b in zip(probas, baseline)])) for name, fn in metric_counts.items()}
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in metric_counts}
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, len(y), size=(min(chunk, n_boot - start), len(y)))
        counts = _resample_counts(idx, len(y))
        for name, fn in metric_counts.items():
            diffs = [fn(y, p, counts) - fn(y, b, counts) for p, b in zip(probas, baseline)]
            draws[name].append(np.mean(diffs, axis=0))
    tail = 100.0 * (1.0 - level) / 2.0
    out = {}
    for name, values in draws.items():
        low, high = np.nanpercentile(np.concatenate(values), [tail, 100.0 - tail])
        out[name] = (point[name], float(low), float(high))
    return out
