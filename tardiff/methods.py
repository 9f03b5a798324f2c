"""One registry of generation methods, and the influence references TarDiff's variants guide with.

Every method (baseline, TarDiff candidate, ablation) is one `Method` entry: which backbone it samples from
(a diffusion checkpoint, or one of the paper's five baseline generators, `tardiff.generators`), which guidance
hook, which reference gradient and score, which scale, how its stays get labels, and which method it is
compared with. Sampling (notebook 04), evaluation (05), tables and plots
iterate `REGISTRY`; a new variant is one entry.

Roles: `baseline` rows are generators without influence; `candidate` rows are TarDiff variants from
which validation TSTR (set-a only) picks the one reported as `tardiff`; `ablation` rows are fixed
settings that show what each choice does (the original's update, its training-set G, an unconditional
backbone, a random G).
"""
from __future__ import annotations

import copy
import functools
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tardiff import artifacts, guidance as guidance_lib
from tardiff.classifier import ClassifierConfig, build_classifier, load_classifier, predict_proba, train_classifier
from tardiff.diffusion import GaussianDiffusion, ddim_sample, load_diffusion
from tardiff.evaluate import pseudo_label
from tardiff.generators import GENERATORS, load_generator
from tardiff.utils import get_device, to_jsonable, write_manifest

log = logging.getLogger(__name__)
SELECTED = "tardiff"  # the name the validation-selected candidate is reported under
DEFAULT_METHOD = "tardiff_dot"  # what `tardiff` samples outside the batch, where no validation selection ran


@dataclass(frozen=True)
class Method:
    name: str
    role: str                      # "baseline", "candidate" or "ablation"
    backbone: str                  # "uncond": ddpm.pt; "cond": the class-conditional cfg_<task>.pt (cfg scale);
                                   # or a baseline generator of tardiff.generators (its own sampler, its labels)
    baseline: str | None = None    # the method it is compared with in the paired table
    guidance: str | None = None    # None, "classifier", "influence", "original"
    reference: str = "guide"       # "guide" (held-out, cross-fit), "train", "random", "hinv", "tracin"
    score: str = "dot"             # "dot" g_iᵀG or "cos"
    scale: str | float = "guidance_scale"  # a Profile field or a number
    normalize_step: bool = True    # divide the hook by its RMS on real stays (scale = sd per value)
    late_fraction: float = 1.0     # guide only at t <= late_fraction * T (1.0: every step)
    select_factor: int = 0         # > 1: over-generate this many times with the backbone, keep top influence
    labels: str = "target"         # "target" (the conditioning label) or "pseudo" (f_theta, rank-matched)
    about: str = ""


REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("ddpm", "baseline", "uncond", labels="pseudo",
           about="unconditional DDPM; f_theta labels its samples, rank-matched to the real prevalence"),
    Method("cfg", "baseline", "cond", about="class-conditional DDPM with classifier-free guidance: TarDiff's backbone"),
    Method("classifier_guidance", "baseline", "uncond", baseline="ddpm", guidance="classifier",
           scale="classifier_guidance_scale", normalize_step=False, about="∇ log p(y | x̂0) of f_theta"),
    # the paper's five baseline generators, as their authors built them (tardiff.generators; README)
    Method("timegan", "baseline", "timegan", about="TimeGAN (Yoon et al. 2019): one model per label"),
    Method("timevae", "baseline", "timevae", about="TimeVAE (Desai et al. 2021): one model per label"),
    Method("timevqvae", "baseline", "timevqvae", about="TimeVQVAE (Lee et al. 2023): class-conditional prior"),
    Method("diffusion_ts", "baseline", "diffusion_ts", about="Diffusion-TS (Yuan & Qiao 2024): one model per label"),
    Method("biodiffusion", "baseline", "biodiffusion",
           about="BioDiffusion (Li et al. 2024): class-conditional, classifier-free guidance"),
    # TarDiff candidates: all on the class-conditional backbone, G from held-out folds unless stated
    Method("tardiff_dot", "candidate", "cond", "cfg", "influence", "guide", "dot",
           about="g_iᵀG, G the mean loss gradient of held-out folds, cross-fit over K fold classifiers"),
    Method("tardiff_dot_strong", "candidate", "cond", "cfg", "influence", "guide", "dot", "strong_guidance_scale",
           about="tardiff_dot with a larger step"),
    Method("tardiff_cos", "candidate", "cond", "cfg", "influence", "guide", "cos", about="cos(g_i, G), held-out G"),
    Method("tardiff_hinv", "candidate", "cond", "cfg", "influence", "hinv", "dot",
           about="true influence: g_iᵀ(H + λI)⁻¹G by damped conjugate gradient"),
    Method("tardiff_tracin", "candidate", "cond", "cfg", "influence", "tracin", "dot",
           about="g_iᵀG summed over checkpoints of each fold classifier's training run"),
    Method("tardiff_late", "candidate", "cond", "cfg", "influence", "guide", "dot", late_fraction=0.5,
           about="tardiff_dot only in the low-noise half of sampling"),
    Method("tardiff_select", "candidate", "cond", "cfg", None, "guide", "dot", select_factor=3,
           about="no step: over-generate 3x with the backbone, keep per label the highest influence"),
    # ablations
    Method("tardiff_original", "ablation", "cond", "cfg", "original", "train", "cos", 1e-5, normalize_step=False,
           about="the released code's update: batch-coupled score, (1 - s) x + s² ∇ at s = 1e-5"),
    Method("tardiff_train_g", "ablation", "cond", "cfg", "influence", "train", "dot",
           about="tardiff_dot with G from the training set at f_theta (the original's reference)"),
    Method("tardiff_random_g", "ablation", "cond", "cfg", "influence", "random", "dot",
           about="control: a random unit G on the same fold classifiers; a gain here is not influence"),
    Method("tardiff_uncond", "ablation", "uncond", "ddpm", "influence", "train", "cos", "legacy_guidance_scale",
           normalize_step=False, about="the previous version: unconditional model, labels attached at random"),
)}


def methods(role: str | None = None) -> list[str]:
    return [name for name, m in REGISTRY.items() if role is None or m.role == role]


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; registered: {sorted(REGISTRY)}")
    return REGISTRY[name]


def comparisons(name: str) -> tuple[str, ...]:
    """What a method is paired with in paired.csv: its registered baseline; a baseline generator against
    TarDiff's backbone (`cfg`) and the reported, validation-selected `tardiff`."""
    if name == SELECTED:
        return ("cfg",)
    method = get_method(name)
    if method.backbone in GENERATORS:
        return ("cfg", SELECTED)
    return (method.baseline,) if method.baseline else ()


def needs(names) -> set[str]:
    """What the named methods sample from: "classifier" (f_theta), "references" (influence_<task>.pt), the
    diffusion backbones "uncond" / "cond", and baseline generators by name."""
    out = set()
    for name in names:
        method = get_method(name)
        out.add(method.backbone)
        if method.guidance == "influence" or method.select_factor > 1:
            out |= {"classifier", "references"}
        elif method.guidance is not None or method.labels == "pseudo":
            out.add("classifier")
    return out


def scale_of(method: Method, profile) -> float:
    """The guidance scale the method samples with (0 for a method without a guidance step)."""
    if method.guidance is None:
        return 0.0
    return float(getattr(profile, method.scale) if isinstance(method.scale, str) else method.scale)


# --------------------------------------------------------------------------- influence references

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


# --------------------------------------------------------------------------- sampling

class Sampler:
    """Everything notebook 04 needs for one task: the models, the references, the real labels to match."""

    def __init__(self, real, profile, models_dir: Path, seed: int = 0, device=None, progress: bool = True,
                 n: int | dict | None = None):
        self.real, self.profile, self.seed, self.progress = real, profile, seed, progress
        self.device = get_device(device)
        self.models_dir = Path(models_dir)
        self.diffusion = GaussianDiffusion(profile.diffusion)
        self.y_target = guidance_lib.target_labels(real.y_train, n=n, seed=seed)  # n=None: the real counts
        self._loaded, self._backbone_draws = {}, {}

    @functools.cached_property
    def classifier(self):
        return load_classifier(artifacts.classifier(self.models_dir, self.real.task), device=self.device)

    @functools.cached_property
    def references(self) -> dict:
        return torch.load(artifacts.influence(self.models_dir, self.real.task), map_location="cpu",
                          weights_only=False)

    def model(self, backbone: str):
        """A backbone, loaded once: a diffusion model ("uncond", "cond") or a fitted baseline generator."""
        if backbone not in self._loaded:
            if backbone in GENERATORS:
                self._loaded[backbone] = load_generator(artifacts.generator(self.models_dir, backbone,
                                                                            self.real.task), device=self.device)
            else:
                self._loaded[backbone] = load_diffusion(artifacts.diffusion(self.models_dir, backbone,
                                                                            self.real.task), device=self.device)
        return self._loaded[backbone]

    def pairs(self, reference: str) -> guidance_lib.Pairs:
        if reference == "train":  # the original's choice: f_theta and its own training set
            return [(self.classifier, guidance_lib.reference_gradient(self.classifier, self.real.X_train,
                                                                     self.real.y_train))]
        return reference_pairs(self.references, reference, self.device)

    def hook(self, method: Method):
        if method.guidance is None:
            return None
        if method.guidance == "classifier":
            return guidance_lib.classifier_guidance(self.classifier)
        if method.guidance == "original":  # the original: unit G of the summed training loss, batch-coupled
            G = guidance_lib.train_grad(self.classifier, self.real.X_train, self.real.y_train)
            return guidance_lib.influence_guidance(self.classifier, G, normalize="batch")
        if method.score == "cos" and not method.normalize_step and method.reference == "train":
            # the previous version: cosine against the unit training-set gradient
            G = guidance_lib.train_grad(self.classifier, self.real.X_train, self.real.y_train)
            hook = guidance_lib.influence_guidance(self.classifier, G)
        else:
            hook = guidance_lib.pair_influence_guidance(self.pairs(method.reference), method.score)
        if method.normalize_step:
            n = min(512, len(self.real.y_train))
            hook = guidance_lib.normalized(hook, self.real.X_train[:n], self.real.y_train[:n])
        if method.late_fraction < 1.0:
            hook = guidance_lib.scheduled(hook, int(method.late_fraction * self.profile.diffusion.timesteps))
        return hook

    def _draw(self, backbone: str, y, seed: int, hook=None, scale: float = 0.0, update: str = "pred_x0"):
        return ddim_sample(self.model(backbone), self.diffusion, torch.as_tensor(y), steps=self.profile.ddim_steps,
                           eta=self.profile.ddim_eta, guidance=hook, guidance_scale=scale,
                           cfg_scale=self.profile.cfg_scale if backbone == "cond" else None,
                           batch_size=self.profile.sample_batch_size, seed=seed, device=self.device,
                           progress=self.progress, guidance_update=update).numpy()

    def backbone_draw(self, seed: int) -> np.ndarray:
        """Unguided class-conditional stays for y_target (the `cfg` set is draw `self.seed`), cached."""
        if seed not in self._backbone_draws:
            self._backbone_draws[seed] = self._draw("cond", self.y_target, seed)
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
            X = self._draw(method.backbone, y, self.seed, hook, info["scale"] if hook else 0.0,
                           "original" if method.guidance == "original" else "pred_x0")
            if hook is not None and hasattr(hook, "reference_rms"):
                info["hook_reference_rms"] = hook.reference_rms
        if method.labels == "pseudo":
            y = pseudo_label(predict_proba(self.classifier, X, device=self.device), np.bincount(self.real.y_train,
                                                                                                minlength=2))
        return X, np.asarray(y, np.int64), info

    def _select(self, method: Method):
        """Over-generate with the backbone, keep per label the stays of highest influence on the guidance set."""
        draws = [self.backbone_draw(self.seed + i) for i in range(method.select_factor)]
        X_all = np.concatenate(draws)
        y_all = np.tile(self.y_target, method.select_factor)
        scores = guidance_lib.pair_scores(self.pairs(method.reference), X_all, y_all, method.score)
        keep = []
        for label, count in zip(*np.unique(self.y_target, return_counts=True)):
            idx = np.flatnonzero(y_all == label)
            keep.append(idx[np.argsort(-scores[idx], kind="stable")[:count]])
        keep = np.concatenate(keep)
        keep = keep[np.random.default_rng(self.seed).permutation(len(keep))]
        return X_all[keep], y_all[keep], {"pool": len(y_all), "kept_score_mean": float(scores[keep].mean()),
                                          "pool_score_mean": float(scores.mean())}


def describe() -> list[dict]:
    """The registry as rows (for README and the notebooks)."""
    return [to_jsonable(asdict(m)) for m in REGISTRY.values()]
