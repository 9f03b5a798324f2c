"""Drawing every registered method's stays (notebook 04, the API, the command line).

A method (`tardiff.methods.REGISTRY`) names a backbone, a guidance hook and a reference gradient; the sampler
loads each model once, builds the method's hook from `HOOKS` (one small builder per kind of guidance) and
draws the real training set's count per label (or `n`). It takes the arrays it uses (the training stays and
labels) and the models folder, nothing else of a data object.
"""
from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from tardiff import artifacts, guidance as guidance_lib
from tardiff.classifier import load_classifier, predict_proba
from tardiff.diffusion import GaussianDiffusion, ddim_sample, load_diffusion
from tardiff.generators import GENERATORS, load_generator
from tardiff.methods import Method, get_method, scale_of
from tardiff.references import load_references, reference_pairs
from tardiff.utils import get_device


def pseudo_label(proba: np.ndarray, counts) -> np.ndarray:
    """0/1 labels for an unconditional sample set: the top-k probabilities get label 1.

    An unconditional, unguided model (`ddpm`) has no label to give its samples, so f_theta scores them and
    the k most likely are called positive, k chosen so the label proportions match the real training set
    (`counts` = (n_negative, n_positive) there, or a {0: n0, 1: n1} dict). Rank-matching keeps prevalence
    exact, where thresholding at 0.5 would label almost nobody positive.
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


def top_per_label(scores: np.ndarray, y_pool: np.ndarray, y_target: np.ndarray, seed: int) -> np.ndarray:
    """Indices into the pool: per label of `y_target`, its count of the highest-scoring pool stays of that
    label (ties by pool order), shuffled by `seed` so labels do not come in blocks."""
    keep = []
    for label, count in zip(*np.unique(y_target, return_counts=True)):
        idx = np.flatnonzero(y_pool == label)
        keep.append(idx[np.argsort(-scores[idx], kind="stable")[:count]])
    keep = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    return keep[np.random.default_rng(seed).permutation(len(keep))]


# --------------------------------------------------------------------------- hooks, one builder per guidance

def _classifier_hook(sampler: "Sampler", method: Method):
    return guidance_lib.classifier_guidance(sampler.classifier)


def _original_hook(sampler: "Sampler", method: Method):
    """The released code's update: one batch-coupled score against the unit training-set gradient."""
    ((classifier, G),) = sampler.pairs(method.reference)
    return guidance_lib.original_guidance(classifier, G)


def _influence_hook(sampler: "Sampler", method: Method):
    hook = guidance_lib.pair_influence_guidance(sampler.pairs(method.reference), method.score)
    if method.normalize_step:
        n = min(sampler.profile.sampling.guidance_norm_stays, len(sampler.y_train))
        hook = guidance_lib.normalized(hook, sampler.X_train[:n], sampler.y_train[:n])
    if method.late_fraction < 1.0:
        hook = guidance_lib.scheduled(hook, int(method.late_fraction * sampler.profile.diffusion.timesteps))
    return hook


HOOKS = {"classifier": _classifier_hook, "original": _original_hook, "influence": _influence_hook}


class Sampler:
    """The models and references of one task, loaded once, and every method's draw from them."""

    def __init__(self, X_train: np.ndarray, y_train: np.ndarray, task: str, profile, models_dir: Path,
                 seed: int = 0, device=None, progress: bool = True, n: int | dict | None = None):
        self.X_train, self.y_train, self.task = np.asarray(X_train), np.asarray(y_train), task
        self.profile, self.seed, self.progress = profile, seed, progress
        self.device = get_device(device)
        self.models_dir = Path(models_dir)
        self.diffusion = GaussianDiffusion(profile.diffusion)
        self.y_target = guidance_lib.target_labels(self.y_train, n=n, seed=seed)  # n=None: the real counts
        self._loaded, self._backbone_draws = {}, {}

    @functools.cached_property
    def classifier(self):
        return load_classifier(artifacts.classifier(self.models_dir, self.task), device=self.device)

    @functools.cached_property
    def references(self) -> dict:
        return load_references(self.models_dir, self.task)

    def model(self, backbone: str):
        """A backbone, loaded once: a diffusion model ("uncond", "cond") or a fitted baseline generator."""
        if backbone not in self._loaded:
            if backbone in GENERATORS:
                path = artifacts.generator(self.models_dir, backbone, self.task)
                self._loaded[backbone] = load_generator(path, device=self.device)
            else:
                path = artifacts.diffusion(self.models_dir, backbone, self.task)
                self._loaded[backbone] = load_diffusion(path, device=self.device)
        return self._loaded[backbone]

    def pairs(self, reference: str) -> guidance_lib.Pairs:
        """[(classifier, G)] of a registry reference: f_theta with its training set's mean-loss gradient
        ("train") or the unit gradient of its summed loss ("train_unit", the original's), or the cross-fit
        references of `build_references` ("guide", "hinv", "random", "tracin")."""
        if reference == "train":
            return [(self.classifier, guidance_lib.reference_gradient(self.classifier, self.X_train, self.y_train))]
        if reference == "train_unit":
            return [(self.classifier, guidance_lib.train_grad(self.classifier, self.X_train, self.y_train))]
        return reference_pairs(self.references, reference, self.device)

    def hook(self, method: Method):
        """The method's guidance hook (None without a guidance step)."""
        return None if method.guidance is None else HOOKS[method.guidance](self, method)

    def draw(self, backbone: str, y, seed: int, hook=None, scale: float = 0.0, update: str = "pred_x0") -> np.ndarray:
        """DDIM stays of a diffusion backbone for labels y, with the profile's sampling settings."""
        s = self.profile.sampling
        return ddim_sample(self.model(backbone), self.diffusion, torch.as_tensor(np.asarray(y)), steps=s.ddim_steps,
                           eta=s.ddim_eta, guidance=hook, guidance_scale=scale,
                           cfg_scale=s.cfg_scale if backbone == "cond" else None, batch_size=s.batch_size,
                           seed=seed, device=self.device, progress=self.progress, clip_x0=s.clip_x0,
                           guidance_update=update).numpy()

    def backbone_draw(self, seed: int) -> np.ndarray:
        """Unguided class-conditional stays for y_target (the `cfg` set is draw `self.seed`), cached."""
        if seed not in self._backbone_draws:
            self._backbone_draws[seed] = self.draw("cond", self.y_target, seed)
        return self._backbone_draws[seed]

    def sample(self, name: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """(X, y, info) of one registered method, with the real training set's count per label."""
        method = get_method(name)
        y = self.y_target
        info = {**asdict(method), "method": name, "scale_setting": method.scale, "scale": scale_of(method, self.profile)}
        if method.backbone in GENERATORS:  # a baseline generator: its own sampler, conditioned on (or per) label
            X = self.model(method.backbone).sample(y, seed=self.seed, device=self.device, progress=self.progress)
        elif method.select_factor > 1:
            X, y, info["selection"] = self._select(method)
        elif method.backbone == "cond" and method.guidance is None:
            X = self.backbone_draw(self.seed)
        else:
            hook = self.hook(method)
            X = self.draw(method.backbone, y, self.seed, hook, info["scale"] if hook else 0.0,
                          "original" if method.guidance == "original" else "pred_x0")
            if hook is not None and hasattr(hook, "reference_rms"):
                info["hook_reference_rms"] = hook.reference_rms
        if method.labels == "pseudo":
            y = pseudo_label(predict_proba(self.classifier, X, device=self.device),
                             np.bincount(self.y_train, minlength=2))
        return X, np.asarray(y, np.int64), info

    def _select(self, method: Method):
        """Over-generate with the backbone, keep per label the stays of highest influence on the guidance set."""
        X_all = np.concatenate([self.backbone_draw(self.seed + i) for i in range(method.select_factor)])
        y_all = np.tile(self.y_target, method.select_factor)
        scores = guidance_lib.pair_scores(self.pairs(method.reference), X_all, y_all, method.score)
        keep = top_per_label(scores, y_all, self.y_target, self.seed)
        return X_all[keep], y_all[keep], {"pool": len(y_all), "kept_score_mean": float(scores[keep].mean()),
                                          "pool_score_mean": float(scores.mean())}
