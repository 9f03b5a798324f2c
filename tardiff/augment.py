"""Augmentation: when do synthetic stays make a model trained on real stays better, and by how much?

A `Mix` is one registered way to add synthetic stays to the real training split: which generators (one, or
several pooled), how many (α × the real count), how they weigh in the loss (w, real stays weigh 1), which
labels (the real prevalence, or balanced), and whether a realism filter first drops the synthetic stays that
a real-vs-synthetic discriminator finds most fake (fitted on the training split only, cross-fitted so no
stay is scored by a discriminator that saw it). `grid` spells the settings a profile runs; `training_set`
builds one seed's (X, y, w); the downstream models, the seed-paired differences against real only and the
validation selection are in `tardiff.pipeline` (notebook 05), the same path as the TSTR tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from tardiff.settings import check, each, fraction, number, one_of, positive, text
from tardiff.utils import largest_remainder

BALANCES = ("prevalence", "balanced")
POOL = "pool"        # the source name of a setting that pools every chosen generator
SELECTED = "augment"  # the name the validation-selected setting is reported under (tsrtr_paired)


@dataclass(frozen=True, kw_only=True)
class Mix:
    sources: tuple[str, ...]      # synthetic sets (method names); more than one: pooled, an equal share each
    alpha: float                  # synthetic stays = round(alpha * real training stays)
    weight: float = 1.0           # loss weight of a synthetic stay (a real one weighs 1)
    balance: str = "prevalence"   # the synthetic labels at the real training prevalence, or half each
    realism: float = 0.0          # fraction of each source dropped first, the most fake by the discriminator

    RANGES: ClassVar[dict] = {"sources": each(text(), min_items=1), "alpha": positive(),
                              "weight": number(0, 1, low_open=True), "balance": one_of(*BALANCES),
                              "realism": fraction()}

    def __post_init__(self):
        check(self)

    @property
    def name(self) -> str:
        """`cfg@1`, `timegan@2 w0.5`, `pool@1 balanced`, `cfg@1 realism0.25`: source, alpha, then what differs."""
        source = self.sources[0] if len(self.sources) == 1 else POOL
        parts = [f"{source}@{self.alpha:g}"]
        if self.weight != 1:
            parts.append(f"w{self.weight:g}")
        if self.balance != "prevalence":
            parts.append(self.balance)
        if self.realism:
            parts.append(f"realism{self.realism:g}")
        return " ".join(parts)

    @property
    def source(self) -> str:
        return self.sources[0] if len(self.sources) == 1 else POOL


def grid(sources, alphas, weights, mix_alpha: float, realism: float, pool: bool = True) -> list[Mix]:
    """The registered settings: how much (every source at every alpha, plain), how to mix (every source at
    `mix_alpha` with each lower weight, balanced labels, the realism filter), and every source pooled at every
    alpha. One list, so the tables, the selection and the figure iterate the same settings."""
    sources = tuple(sources)
    out = [Mix(sources=(s,), alpha=a) for s in sources for a in alphas]
    for s in sources:
        out += [Mix(sources=(s,), alpha=mix_alpha, weight=w) for w in weights if w != 1]
        out.append(Mix(sources=(s,), alpha=mix_alpha, balance="balanced"))
        if realism:
            out.append(Mix(sources=(s,), alpha=mix_alpha, realism=realism))
    if pool and len(sources) > 1:
        out += [Mix(sources=sources, alpha=a) for a in alphas]
    return out


def plain_rows(frame):
    """The rows of a settings table (tsrtr_paired) that are the paper's TSRTR: weight 1, the real prevalence,
    no filter (the selected alias left out)."""
    return frame[(frame["weight"] == 1) & (frame["balance"] == "prevalence") & (frame["realism"] == 0)
                 & (frame["setting"] != SELECTED)]


def synthetic_counts(mix: Mix, y_real: np.ndarray) -> dict[str, dict[int, int]]:
    """{source: {label: stays}} a setting draws: round(alpha * n_real) in all, split evenly over the sources
    (largest remainder), each share at the real training prevalence or half per label."""
    y_real = np.asarray(y_real)
    total = int(round(mix.alpha * len(y_real)))
    shares = largest_remainder(np.ones(len(mix.sources)), total)
    real_counts = np.bincount(y_real, minlength=2)
    out = {}
    for source, share in zip(mix.sources, shares):
        per_label = largest_remainder(real_counts if mix.balance == "prevalence" else np.ones(2), int(share))
        out[source] = {0: int(per_label[0]), 1: int(per_label[1])}
    return out


def kept_after_filter(realism_scores: np.ndarray | None, y: np.ndarray, fraction: float) -> np.ndarray:
    """Indices a realism filter keeps: per label, all but the `fraction` with the lowest realism score (the
    most fake), so the filter cannot change a source's label proportions."""
    y = np.asarray(y)
    if not fraction:
        return np.arange(len(y))
    if realism_scores is None:
        raise ValueError("a realism filter needs the synthetic stays' realism scores (realism_scores)")
    keep = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        n_drop = int(round(fraction * len(idx)))
        keep.append(idx[np.argsort(-realism_scores[idx], kind="stable")[:len(idx) - n_drop]])
    return np.sort(np.concatenate(keep))


def training_set(X_real: np.ndarray, y_real: np.ndarray, pools: dict, mix: Mix, seed: int,
                 realism_scores: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One seed's augmented training set (X, y, w): the real stays (weight 1) and the setting's synthetic
    stays (weight `mix.weight`; w is None when that is 1, so the plain loss runs), drawn without replacement
    from `pools` {source: (X, y)} by `seed`, after the realism filter. Too few stays of a label in a source is
    an error naming both (generate more)."""
    rng = np.random.default_rng(seed)
    X_parts, y_parts = [np.asarray(X_real)], [np.asarray(y_real)]
    for source, per_label in synthetic_counts(mix, y_real).items():
        if source not in pools:
            raise ValueError(f"setting {mix.name!r} needs synthetic set {source!r}; have {sorted(pools)}")
        X_syn, y_syn = pools[source]
        y_syn = np.asarray(y_syn)
        scores = None if realism_scores is None else realism_scores.get(source)
        kept = kept_after_filter(scores, y_syn, mix.realism)
        for label, count in per_label.items():
            candidates = kept[y_syn[kept] == label]
            if count > len(candidates):
                raise ValueError(f"setting {mix.name!r}: needs {count} synthetic stays of label {label} from "
                                 f"{source!r}, which has {len(candidates)} (after the realism filter); sample "
                                 f"more (the profile's augment_pool: extra stays per real one, notebook 04)")
            chosen = np.sort(rng.choice(candidates, size=count, replace=False))
            X_parts.append(np.asarray(X_syn)[chosen])
            y_parts.append(y_syn[chosen])
    X, y = np.concatenate(X_parts), np.concatenate(y_parts).astype(np.int64)
    if mix.weight == 1:
        return X, y, None
    w = np.concatenate([np.ones(len(y_real), np.float32), np.full(len(y) - len(y_real), mix.weight, np.float32)])
    return X, y, w


def realism_scores(X_real: np.ndarray, pools: dict, config, seed: int = 0) -> dict[str, np.ndarray]:
    """{source: (N,) logit "real" of each synthetic stay}, cross-fitted: the pool and the real training stays
    are cut in two halves; the discriminator fitted on real half k against synthetic half k (as many of each,
    `config` a `fidelity.FidelityConfig`, the fidelity discriminator's sizes) scores synthetic half 1 − k, so
    no stay is scored by a discriminator that saw it. Training data only: validation and test play no part."""
    from tardiff import grouped  # the batched trainer of the fidelity discriminators

    rng = np.random.default_rng(seed)
    real_half = np.array_split(rng.permutation(len(X_real)), 2)
    train_sets, evals, seeds, orders, where = [], [], [], [], []
    for s, (source, (X_syn, _)) in enumerate(sorted(pools.items())):
        syn_half = np.array_split(rng.permutation(len(X_syn)), 2)
        for k in (0, 1):
            n = min(len(real_half[k]), len(syn_half[k]))
            real_rows, syn_rows = real_half[k][:n], syn_half[k][:n]
            train_sets.append((np.concatenate([X_real[real_rows], X_syn[syn_rows]]), np.r_[np.ones(n), np.zeros(n)]))
            evals.append(np.asarray(X_syn)[syn_half[1 - k]])
            member_seed = seed + 2 * s + k
            seeds.append(member_seed)
            orders.append(lambda r=np.random.default_rng(member_seed), m=2 * n: r.permutation(m))
            where.append((source, syn_half[1 - k]))
    logits = grouped.fixed_epoch_logits(train_sets, evals, hidden=config.hidden, epochs=config.epochs,
                                        batch_size=config.batch_size, lr=config.lr, seeds=seeds, orders=orders,
                                        device=config.device)
    out = {source: np.zeros(len(X_syn)) for source, (X_syn, _) in pools.items()}
    for (source, rows), z in zip(where, logits):
        out[source][rows] = z.numpy()
    return out
