"""One registry of generation methods.

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

from dataclasses import asdict, dataclass

from tardiff.generators import GENERATORS
from tardiff.utils import to_jsonable

SELECTED = "tardiff"  # the name the validation-selected candidate is reported under
DEFAULT_METHOD = "tardiff_dot"  # the API's and `tardiff generate`'s default variant (no validation selection there)


@dataclass(frozen=True, kw_only=True)
class Method:
    name: str
    role: str                      # "baseline", "candidate" or "ablation"
    backbone: str                  # "uncond": ddpm.pt; "cond": the class-conditional cfg_<task>.pt (cfg scale);
                                   # or a baseline generator of tardiff.generators (its own sampler, its labels)
    baseline: str | None = None    # the method it is compared with in the paired table
    guidance: str | None = None    # None or a hook of tardiff.sampler.HOOKS: "classifier", "influence", "original"
    reference: str = "guide"       # G: "guide" (held-out, cross-fit), "train" (f_theta's training set, mean loss),
                                   # "train_unit" (its unit summed-loss gradient, the original's), "random",
                                   # "hinv", "tracin" (tardiff.sampler.Sampler.pairs)
    score: str = "dot"             # "dot" g_iᵀG or "cos"
    scale: str | float = "guidance_scale"  # a Profile field or a number
    normalize_step: bool = True    # divide the hook by its RMS on real stays (scale = sd per value)
    late_fraction: float = 1.0     # guide only at t <= late_fraction * T (1.0: every step)
    select_factor: int = 0         # > 1: over-generate this many times with the backbone, keep top influence
    labels: str = "target"         # "target" (the conditioning label) or "pseudo" (f_theta, rank-matched)
    about: str = ""


def _candidate(name: str, about: str, **kw) -> Method:
    """A TarDiff variant on the class-conditional backbone, compared with it (cfg)."""
    return Method(**{"name": name, "role": "candidate", "backbone": "cond", "baseline": "cfg",
                     "guidance": "influence", "about": about, **kw})


REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method(name="ddpm", role="baseline", backbone="uncond", labels="pseudo",
           about="unconditional DDPM; f_theta labels its samples, rank-matched to the real prevalence"),
    Method(name="cfg", role="baseline", backbone="cond",
           about="class-conditional DDPM with classifier-free guidance: TarDiff's backbone"),
    Method(name="classifier_guidance", role="baseline", backbone="uncond", baseline="ddpm", guidance="classifier",
           scale="classifier_guidance_scale", normalize_step=False, about="∇ log p(y | x̂0) of f_theta"),
    # the paper's five baseline generators, as their authors built them (tardiff.generators; docs/generators.md)
    Method(name="timegan", role="baseline", backbone="timegan",
           about="TimeGAN (Yoon et al. 2019): one model per label"),
    Method(name="timevae", role="baseline", backbone="timevae",
           about="TimeVAE (Desai et al. 2021): one model per label"),
    Method(name="timevqvae", role="baseline", backbone="timevqvae",
           about="TimeVQVAE (Lee et al. 2023): class-conditional prior"),
    Method(name="diffusion_ts", role="baseline", backbone="diffusion_ts",
           about="Diffusion-TS (Yuan & Qiao 2024): one model per label"),
    Method(name="biodiffusion", role="baseline", backbone="biodiffusion",
           about="BioDiffusion (Li et al. 2024): class-conditional, classifier-free guidance"),
    # TarDiff candidates: all on the class-conditional backbone, G from held-out folds unless stated
    _candidate("tardiff_dot", "g_iᵀG, G the mean loss gradient of held-out folds, cross-fit over K fold classifiers"),
    _candidate("tardiff_dot_strong", "tardiff_dot with a larger step", scale="strong_guidance_scale"),
    _candidate("tardiff_cos", "cos(g_i, G), held-out G", score="cos"),
    _candidate("tardiff_hinv", "true influence: g_iᵀ(H + λI)⁻¹G by damped conjugate gradient", reference="hinv"),
    _candidate("tardiff_tracin", "g_iᵀG summed over checkpoints of each fold classifier's training run",
               reference="tracin"),
    _candidate("tardiff_late", "tardiff_dot only in the low-noise half of sampling", late_fraction=0.5),
    _candidate("tardiff_select", "no step: over-generate 3x with the backbone, keep per label the highest influence",
               guidance=None, select_factor=3),
    # ablations
    Method(name="tardiff_original", role="ablation", backbone="cond", baseline="cfg", guidance="original",
           reference="train_unit", score="cos", scale=1e-5, normalize_step=False,
           about="the released code's update: batch-coupled score, (1 - s) x + s² ∇ at s = 1e-5"),
    Method(name="tardiff_train_g", role="ablation", backbone="cond", baseline="cfg", guidance="influence",
           reference="train", about="tardiff_dot with G from the training set at f_theta (the original's reference)"),
    Method(name="tardiff_random_g", role="ablation", backbone="cond", baseline="cfg", guidance="influence",
           reference="random", about="control: a random unit G on the same fold classifiers; a gain here is not influence"),
    Method(name="tardiff_uncond", role="ablation", backbone="uncond", baseline="ddpm", guidance="influence",
           reference="train_unit", score="cos", scale="legacy_guidance_scale", normalize_step=False,
           about="the previous version: unconditional model, labels attached at random"),
)}


def methods(role: str | None = None) -> list[str]:
    return [name for name, m in REGISTRY.items() if role is None or m.role == role]


def get_method(name: str) -> Method:
    if name == SELECTED:
        raise ValueError(f"{SELECTED!r} names the candidate the batch selects on validation (notebook 05); outside "
                         f"the batch name a registered variant, e.g. {DEFAULT_METHOD!r} (the API's default)")
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


def describe() -> list[dict]:
    """The registry as rows (for README and the notebooks)."""
    return [to_jsonable(asdict(m)) for m in REGISTRY.values()]
