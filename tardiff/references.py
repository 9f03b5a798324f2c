"""The influence references TarDiff's variants guide with, cross-fit on the training split (notebook 02).

Per fold k of K stratified folds: a fold classifier trained on the other folds, the mean loss gradient G_k of
fold k (which it never saw), (H + λI)⁻¹G_k, TracIn checkpoints with their G, and a random unit G (a control).
`reference_pairs` turns a saved file back into the [(classifier, G)] pairs a guidance hook sums over.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from tardiff import artifacts, guidance as guidance_lib
from tardiff.classifier import ClassifierConfig, build_classifier, train_classifier
from tardiff.utils import get_device, write_manifest

log = logging.getLogger(__name__)


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(N,) fold index 0..k-1, each label spread evenly over the folds."""
    y = np.asarray(y)
    if k < 2:
        raise ValueError(f"need at least 2 folds for cross-fitting, got {k}")
    fold = np.empty(len(y), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        fold[idx] = np.arange(len(idx)) % k
    return fold


def build_references(real, profile, path: Path, seed: int = 0, device=None, progress: bool = True) -> dict:
    """Cross-fit influence references of one task, saved to `path` (outputs/models/influence_<task>.pt).

    The training split is cut into K stratified folds; fold classifier k is trained on the other folds
    (early stopping on the real validation split, as f_theta) and its reference gradient is the mean loss
    gradient over fold k, which it never saw: every real training stay contributes to one G. Per fold
    also: (H + λI)⁻¹G on its own training data, TracIn checkpoints with their G, and a random unit G.
    """
    device = get_device(device)
    start = time.perf_counter()
    k = profile.influence_folds
    folds = stratified_folds(real.y_train, k, seed)
    out = {"config": asdict(profile.guide_classifier), "n_features": real.X_train.shape[-1], "folds": []}
    for f in range(k):
        fit, held = folds != f, folds == f
        snapshots = []
        model, history = train_classifier(real.X_train[fit], real.y_train[fit], real.X_val, real.y_val,
                                          config=profile.guide_classifier, train=profile.guide_train,
                                          seed=seed + 100 + f, device=device, progress=progress,
                                          on_epoch=lambda e, m: snapshots.append(copy.deepcopy(m.state_dict())))
        X_held, y_held = real.X_train[held], real.y_train[held]
        G = guidance_lib.reference_gradient(model, X_held, y_held)
        hinv, info = guidance_lib.inverse_hvp(model, real.X_train[fit], real.y_train[fit], G,
                                              damping=profile.hinv_damping, max_iter=profile.hinv_max_iter)
        log.info("fold %d: CG %s", f, info)
        best = history["best_epoch"]
        epochs = sorted(set(np.linspace(0, best, profile.tracin_checkpoints).round().astype(int).tolist()))
        tracin = []
        for e in epochs:
            snapshot = build_classifier(real.X_train.shape[-1], profile.guide_classifier).to(device)
            snapshot.load_state_dict(snapshots[e])
            tracin.append({"epoch": e, "state_dict": _cpu(snapshots[e]),
                           "guide": _cpu(guidance_lib.reference_gradient(snapshot.eval(), X_held, y_held))})
        out["folds"].append({"state_dict": _cpu(model.state_dict()), "guide": _cpu(G), "hinv": _cpu(hinv),
                             "hinv_info": info, "tracin": tracin, "best_epoch": best,
                             "random": _cpu(guidance_lib.random_gradient(model, seed=seed + 200 + f)),
                             "n_fit": int(fit.sum()), "n_held": int(held.sum()),
                             "held_positive": int(y_held.sum())})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(out, tmp)
    tmp.replace(path)
    summary = [{k_: v for k_, v in fold.items() if k_ in ("hinv_info", "best_epoch", "n_fit", "n_held",
                                                           "held_positive")} | {"tracin_epochs": [t["epoch"] for t in fold["tracin"]]}
               for fold in out["folds"]]
    write_manifest(path.with_suffix(".json"), config={"classifier": profile.guide_classifier,
                                                      "train": profile.guide_train, "folds": k,
                                                      "hinv_damping": profile.hinv_damping,
                                                      "hinv_max_iter": profile.hinv_max_iter,
                                                      "tracin_checkpoints": profile.tracin_checkpoints},
                   seed=seed, wall_time_s=time.perf_counter() - start, task=real.task, folds=summary)
    return out


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def load_references(models_dir: Path, task: str) -> dict:
    """A task's saved references (`build_references`), on the CPU."""
    return torch.load(artifacts.influence(models_dir, task), map_location="cpu", weights_only=False)


def reference_pairs(references: dict, kind: str, device=None) -> guidance_lib.Pairs:
    """[(classifier, G)] of one reference kind ("guide", "hinv", "random", "tracin") from build_references."""
    device = get_device(device)
    config = ClassifierConfig(**references["config"])

    def model(state):
        m = build_classifier(references["n_features"], config)
        m.load_state_dict(state)
        return m.to(device).eval()

    def on(G):
        return {k: v.to(device) for k, v in G.items()}

    if kind == "tracin":
        return [(model(c["state_dict"]), on(c["guide"])) for fold in references["folds"] for c in fold["tracin"]]
    if kind not in ("guide", "hinv", "random"):
        raise ValueError(f"unknown reference kind {kind!r}")
    return [(model(fold["state_dict"]), on(fold[kind])) for fold in references["folds"]]
