"""Named run profiles (nanoGPT style): plain dataclasses, printed at the start of every notebook.

`smoke`: minutes on a laptop, for CI; `default`: all of PhysioNet 2012 sized for a 2-core CPU;
`paper`: the original's hyper-parameters, for a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import ClassVar

import numpy as np

from tardiff.classifier import ClassifierConfig, TrainConfig
from tardiff.diffusion import DiffusionConfig, DiffusionTrainConfig
from tardiff.generators import GENERATORS
from tardiff.generators.biodiffusion import BioDiffusionConfig
from tardiff.generators.diffusion_ts import DiffusionTSConfig
from tardiff.generators.timegan import TimeGANConfig
from tardiff.generators.timevae import TimeVAEConfig
from tardiff.generators.timevqvae import TimeVQVAEConfig
from tardiff.settings import SettingError, check, count, each, fraction, number, one_of, optional, positive
from tardiff.unet1d import UNetConfig

TASKS = ("mortality", "long_stay")
# what augmentation adds to the real training split: the diffusion rows, the reported TarDiff pick and the
# paper's five baselines (the candidates and ablations are not augmentation settings of their own)
AUGMENT_SOURCES = ("ddpm", "cfg", "classifier_guidance", "tardiff", *GENERATORS)


@dataclass
class GeneratorSettings:
    """The paper's five baseline generators (tardiff.generators): their authors' settings unless a profile
    states a reduction (docs/generators.md). `--set generators.timegan.iterations=2000` reaches them."""

    timegan: TimeGANConfig = field(default_factory=TimeGANConfig)
    timevae: TimeVAEConfig = field(default_factory=TimeVAEConfig)
    timevqvae: TimeVQVAEConfig = field(default_factory=TimeVQVAEConfig)
    diffusion_ts: DiffusionTSConfig = field(default_factory=DiffusionTSConfig)
    biodiffusion: BioDiffusionConfig = field(default_factory=BioDiffusionConfig)

    @classmethod
    def tiny(cls) -> "GeneratorSettings":
        """Every generator's seconds-long configuration: plumbing only (the smoke profile, the tests)."""
        return cls(**{f.name: type(getattr(cls(), f.name)).tiny() for f in fields(cls)})

    @classmethod
    def reduced(cls, reductions: dict) -> "GeneratorSettings":
        """The authors' settings with `reductions` {generator: {field: value}} applied."""
        authors = cls()
        return cls(**{f.name: replace(getattr(authors, f.name), **reductions.get(f.name, {})) for f in fields(cls)})


# Equal compute (the paper's table): each baseline trains for what `cfg` costs to train per task in the default
# profile (3,000 steps, 142 CPU-s on one thread), as counts measured once by `python experiments/budget_curves.py
# measure` (results/budget_curves/budget.md: the CPU-s of a unit is the slope between two short fits on
# mortality's training split) and written here, so a run is the same on any machine (tests/test_budget.py holds
# these to that file). A per-label generator's step counts are the task's total with
# generator_label_budget="shared" (Generator.label_share); TimeVAE counts epochs, which need no split.
EQUAL_BUDGET = {
    "timegan": {"iterations": 593},                                      # per phase (authors: 50,000)
    "timevae": {"max_epochs": 256},                                      # their early stopping still applies
    "timevqvae": {"max_steps_stage1": 1282, "max_steps_stage2": 2564},   # their 1:2 ratio (20,000 : 40,000)
    "diffusion_ts": {"train_steps": 720},                                # (authors: 10,000)
    "biodiffusion": {"max_steps": 574},                                  # (authors: ~17,000, 300 epochs)
}
# Sampling is not budgeted (its cost is reported in budget.md); these two samplers are shortened to their DDIM:
SAMPLING_REDUCTIONS = {"diffusion_ts": {"sampling_timesteps": 50},       # of 500
                       "biodiffusion": {"sampling_timesteps": 20}}       # of 1,000
# The default profile's settings of the five: the authors' with the two above (`--reductions default` of
# experiments/generator_benchmarks.py scores them on Sines / Stocks: how trained the equal budget leaves each).
DEFAULT_GENERATOR_REDUCTIONS = {name: {**counts, **SAMPLING_REDUCTIONS.get(name, {})}
                                for name, counts in EQUAL_BUDGET.items()}


@dataclass
class FieldMetricsConfig:
    """The field's fidelity metrics in notebook 05 (tardiff.field_metrics): the TimeGAN / Diffusion-TS protocol."""

    repeats: int = 3                        # Diffusion-TS reports 5; each repeat retrains every post-hoc model
    discriminative_iterations: int = 2000
    predictive_iterations: int = 5000
    ts2vec_iterations: int | None = None    # None: TS2Vec's own rule (600 for data of more than 100,000 values)

    RANGES: ClassVar[dict] = {"repeats": count(), "discriminative_iterations": count(),
                              "predictive_iterations": count(), "ts2vec_iterations": optional(count())}

    def __post_init__(self):
        check(self)


@dataclass
class SamplingConfig:
    """How the diffusion backbones are sampled (notebook 04, the API): DDIM, classifier-free guidance, and the
    two constants TarDiff's hooks use."""

    ddim_steps: int = 20
    ddim_eta: float = 0.0
    batch_size: int = 256
    cfg_scale: float = 1.0                  # w of the class-conditional backbone (eps = (1 + w) eps_y - w eps_null)
    clip_x0: float | None = 5.0             # pred_x0 clipped to ±clip_x0: z-scores never leave ±5 (stays.Preprocessor)
    guidance_norm_stays: int = 512          # real stays the normalised hook's RMS is measured on

    RANGES: ClassVar[dict] = {"ddim_steps": count(why="at most diffusion.timesteps"),
                              "ddim_eta": number(0, 1, why="DDIM's sigma; above 1 the direction term is imaginary"),
                              "batch_size": count(), "cfg_scale": number(0), "clip_x0": optional(positive()),
                              "guidance_norm_stays": count()}

    def __post_init__(self):
        check(self)


@dataclass
class Profile:
    name: str
    tasks: tuple = TASKS
    max_train_stays: int | None = None      # subsample the training split (smoke)
    max_test_stays: int | None = None
    # f_theta: the classifier whose gradients guide sampling.
    guide_classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    guide_train: TrainConfig = field(default_factory=TrainConfig)
    # The downstream classifier trained again and again for TSTR / TSRTR (and, with its hidden size and
    # dropout, the 1D CNN downstream); its epoch is selected on validation loss (tardiff.evaluate's docstring).
    eval_classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    eval_train: TrainConfig = field(default_factory=lambda: TrainConfig(monitor="loss"))
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    diffusion_train: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # TarDiff's step is normalised (tardiff.guidance.normalized): the scale is the RMS shift of pred_x0 per
    # DDIM step in model-space sd, whatever f_theta, score or reference. Fixed a priori: 0.05 sd per value
    # per step is small beside the data (sd 1) and as large as the previous unnormalised scale 5 at its
    # strongest; validation picks between it and the strong one.
    guidance_scale: float = 0.05
    strong_guidance_scale: float = 0.2
    legacy_guidance_scale: float = 5.0      # tardiff_uncond: the previous version's unnormalised scale
    classifier_guidance_scale: float = 5.0
    # influence references (tardiff.references.build_references)
    influence_folds: int = 3                # cross-fit folds of the training split
    hinv_damping: float = 0.01              # λ of (H + λI)⁻¹G
    hinv_max_iter: int = 30                 # conjugate-gradient iterations at most
    tracin_checkpoints: int = 3             # per fold classifier, evenly spaced up to its best epoch
    n_seeds: int = 3
    bootstrap: int = 1000
    ci_level: float = 0.95                  # every bootstrap CI of the tables (ensemble and seed-paired)
    fidelity_seeds: int = 3                 # discriminators per synthetic set (the score's sd is reported)
    # the post-hoc GRUs of the discriminative and predictive scores (tardiff.fidelity.FidelityConfig)
    fidelity_epochs: int = 15
    fidelity_hidden: int = 32
    fidelity_batch_size: int = 128
    fidelity_lr: float = 1e-3
    fidelity_max_lag: int = 5               # autocorrelation distance: lags 1..max_lag
    field_metrics: FieldMetricsConfig = field(default_factory=FieldMetricsConfig)
    # augmentation (tardiff.augment, notebook 05): real + synthetic, paired against real only, chosen on validation
    augment_sources: tuple = AUGMENT_SOURCES  # synthetic sets added ("tardiff": the validation-selected candidate)
    augment_alphas: tuple = (0.25, 0.5, 1.0, 2.0, 4.0)  # synthetic stays per real training stay
    augment_weights: tuple = (0.25, 0.5, 1.0)  # loss weight of a synthetic stay (a real one weighs 1)
    augment_mix_alpha: float = 1.0          # the alpha at which the lower weights, balanced labels, the filter run
    augment_realism: float = 0.25           # the realism filter drops this fraction of each source, most fake first
    augment_pool: int = 3                   # notebook 04 draws this many extra stays per real training stay
    augment_downstream: tuple = ("gru", "cnn")
    generators: GeneratorSettings = field(default_factory=GeneratorSettings)
    # a generator trained once per label: "each" label model gets the generator's counts (the authors' setting
    # for one model), or "shared": the counts are the task's budget, split by label (Generator.label_share)
    generator_label_budget: str = "each"
    # the baseline generators the batch fits, samples and scores (`--set batch_generators=` for none: the
    # diffusion rows only, e.g. to measure augmentation where the five do not fit the machine's time)
    batch_generators: tuple = tuple(GENERATORS)

    RANGES: ClassVar[dict] = {
        "tasks": each(one_of(*TASKS), min_items=1),
        "max_train_stays": optional(count()), "max_test_stays": optional(count()),
        "guidance_scale": number(0), "strong_guidance_scale": number(0), "legacy_guidance_scale": number(0),
        "classifier_guidance_scale": number(0),
        "influence_folds": count(2, why="cross-fitting needs a held-out fold"), "hinv_damping": positive(),
        "hinv_max_iter": count(), "tracin_checkpoints": count(),
        "n_seeds": count(), "bootstrap": count(), "ci_level": number(0, 1, True, True), "fidelity_seeds": count(),
        "fidelity_epochs": count(), "fidelity_hidden": count(), "fidelity_batch_size": count(),
        "fidelity_lr": positive(), "fidelity_max_lag": count(),
        "augment_sources": each(one_of(*AUGMENT_SOURCES)), "augment_alphas": each(positive()),
        "augment_weights": each(number(0, 1, low_open=True)), "augment_mix_alpha": positive(),
        "augment_realism": fraction(), "augment_pool": count(0, why="0: no extra stays"),
        "augment_downstream": each(one_of("gru", "cnn"), why="including 'gru'"),
        "batch_generators": each(one_of(*GENERATORS)),
        "generator_label_budget": one_of("each", "shared"),
    }

    def __post_init__(self):  # every profile and override passes here: a bad value stops before any notebook runs
        check(self)
        if self.sampling.ddim_steps > self.diffusion.timesteps:
            raise SettingError(type(self), "sampling.ddim_steps", self.sampling.ddim_steps,
                               f"an integer in 1..diffusion.timesteps ({self.diffusion.timesteps})")
        if self.guide_classifier.rnn == "cnn":  # the guidance differentiates a recurrent f_theta per sample
            raise SettingError(type(self), "guide_classifier.rnn", "cnn", "one of 'gru', 'lstm' (f_theta)")
        if "gru" not in self.augment_downstream:  # notebook 05 chooses the augmentation setting with the GRU
            raise SettingError(type(self), "augment_downstream", self.augment_downstream, "a tuple that includes 'gru'")


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[name]()


def _smoke() -> Profile:
    small = ClassifierConfig(hidden=16, layers=1, dropout=0.0)
    quick = TrainConfig(max_epochs=3, patience=2, batch_size=64, monitor="loss")
    return Profile(
        name="smoke", max_train_stays=300, max_test_stays=300,
        guide_classifier=small, guide_train=quick, eval_classifier=small, eval_train=quick,
        unet=UNetConfig(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=()),
        diffusion_train=DiffusionTrainConfig(steps=30, batch_size=32, warmup=5, checkpoint_every=15,
                                             log_every=5),
        sampling=SamplingConfig(ddim_steps=5, batch_size=128), n_seeds=2, bootstrap=50,
        augment_sources=("ddpm", "cfg", "tardiff", "timegan"), augment_alphas=(0.5, 2.0), augment_weights=(0.5, 1.0),
        augment_mix_alpha=0.5,
        influence_folds=2, hinv_max_iter=5, tracin_checkpoints=2, fidelity_seeds=2, fidelity_epochs=2,
        field_metrics=FieldMetricsConfig(repeats=2, discriminative_iterations=20, predictive_iterations=20,
                                         ts2vec_iterations=5),
        generators=GeneratorSettings.tiny(), generator_label_budget="shared",
    )


def _default() -> Profile:
    # Sized for a 2-core CPU: the downstream model is re-trained ~150 times for the tables, so it is a
    # 1-layer biGRU of hidden 32 (test-b AUROC .70 for mortality, vs .71 for 2 layers of 64 at 4x the time).
    # f_theta is that same downstream model, as in the paper.
    downstream = ClassifierConfig(hidden=32, layers=1, dropout=0.2)
    return Profile(
        name="default",
        guide_classifier=downstream, guide_train=TrainConfig(max_epochs=30, patience=5, monitor="loss"),
        eval_classifier=downstream, eval_train=TrainConfig(max_epochs=20, patience=4, monitor="loss"),
        unet=UNetConfig(),
        diffusion_train=DiffusionTrainConfig(steps=3000, batch_size=128),
        sampling=SamplingConfig(batch_size=1200),
        generators=GeneratorSettings.reduced(DEFAULT_GENERATOR_REDUCTIONS), generator_label_budget="shared",
        # TSRTR as the paper's method reads it (real + alpha x synthetic) for TarDiff and its backbone; the full
        # augmentation study (41 settings per task of the four diffusion sources) is AUGMENTATION_STUDY, its own run
        augment_sources=("cfg", "tardiff"), augment_alphas=(0.5, 1.0), augment_weights=(1.0,), augment_mix_alpha=0.25,
        augment_realism=0.0, augment_pool=1,
    )


# The augmentation study (docs/augmentation.md, results/augmentation/): the default run with every registered
# augmentation setting of the diffusion sources, without the five generators, as published there:
#   python -m tardiff.reproduce --profile default $(python -c "from tardiff.config import AUGMENTATION_STUDY as s;
#       print(' '.join(f'--set {k}={v}' for k, v in s.items()))") --publish results/augmentation
AUGMENTATION_STUDY = {"batch_generators": "", "augment_sources": "ddpm,cfg,classifier_guidance,tardiff",
                      "augment_alphas": "0.25,0.5,1,2,4", "augment_weights": "0.25,0.5,1", "augment_mix_alpha": "1",
                      "augment_realism": "0.25", "augment_pool": "3"}


def _paper() -> Profile:
    # The original's hyper-parameters: UNet 64 channels, mult (1,2,4,4), batch 128, 20,000 steps, lr 1e-4.
    return Profile(
        name="paper",
        guide_classifier=ClassifierConfig(hidden=256), guide_train=TrainConfig(),
        eval_classifier=ClassifierConfig(hidden=256), eval_train=TrainConfig(monitor="loss"),
        unet=UNetConfig.paper(),
        diffusion_train=DiffusionTrainConfig(steps=20_000, batch_size=128, lr=1e-4),
        n_seeds=5, field_metrics=FieldMetricsConfig(repeats=5),
    )


PROFILES = {"smoke": _smoke, "default": _default, "paper": _paper}


def with_overrides(profile: Profile, **overrides) -> Profile:
    """A copy of `profile` with fields replaced; dotted names reach nested configs (`eval_train.max_epochs`).

    Values are checked against the field's current type and its declared range (tardiff.settings), so papermill's
    `overrides`, `--set` and the API refuse an impossible value here, naming it by its dotted path.
    """
    out = profile
    for key, value in overrides.items():
        out = _replace_path(out, key.split("."), value, key)
    return out


def _replace_path(obj, parts: list[str], value, key: str, prefix: str = ""):
    names = {f.name for f in fields(obj)} if is_dataclass(obj) else set()
    if parts[0] not in names:
        raise ValueError(f"unknown setting {key!r}; {type(obj).__name__} has {sorted(names)}")
    current = getattr(obj, parts[0])
    new = (_replace_path(current, parts[1:], value, key, f"{prefix}{parts[0]}.") if len(parts) > 1
           else _coerce(value, current, key))
    try:
        return replace(obj, **{parts[0]: new})
    except SettingError as error:  # refused by obj's own check: name it as the user does
        if error.owner is not type(obj):
            raise
        raise error.at(prefix) from None


def _coerce(value, current, key: str):
    """`value` (a string from the command line, or a Python value) as the type of `current`."""
    if current is None:  # an optional setting that is off (e.g. max_train_stays): none, an int or a number
        if not isinstance(value, str):
            return value
        if value.lower() == "none":
            return None
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        return value
    if (isinstance(current, (int, float)) and not isinstance(current, bool)
            and (value is None or isinstance(value, str) and value.lower() == "none")):
        return None  # an optional number turned off; the declared range refuses None where it is not optional
    if isinstance(value, type(current)) and not isinstance(current, tuple):
        return value
    try:
        if isinstance(current, bool):
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            if isinstance(value, bool):
                return value
            raise ValueError
        if isinstance(current, (int, float)):
            if isinstance(value, bool):
                raise ValueError
            number = type(current)(value)
            if isinstance(current, int) and isinstance(value, float) and number != value:
                raise ValueError
            return number
        if isinstance(current, tuple):
            if isinstance(value, str) and not value.strip():
                return ()  # `--set key=`: the empty tuple
            items = value.split(",") if isinstance(value, str) else list(value)
            like = current[0] if current else ""
            return tuple(_coerce(item.strip() if isinstance(item, str) else item, like, key) for item in items)
        if isinstance(current, str):
            return str(value)
    except (TypeError, ValueError):
        pass
    raise ValueError(f"setting {key!r} must be a {type(current).__name__} like {current!r}, got {value!r}")


def settings_table(profile: str = "default") -> str:
    """Every setting of a profile (dotted as `--set` takes it), its type, what it may hold and its value in
    `profile`: a markdown table generated from the configs' declared ranges (tardiff.settings), for the docs."""
    rows = ["| setting | type | allowed | default |", "|---|---|---|---|"]

    def walk(config, prefix: str):
        for f in fields(config):
            value = getattr(config, f.name)
            if is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
                continue
            declared = getattr(type(config), "RANGES", {}).get(f.name)
            allowed = declared.describe() if declared else "True or False" if isinstance(value, bool) else "any"
            cells = [f"`{prefix}{f.name}`", f"`{f.type}`", allowed, f"`{value!r}`"]
            rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")

    walk(get_profile(profile), "")
    return "\n".join(rows) + "\n"


def data_warnings(profile: Profile, y_train, y_val) -> list[str]:
    """Settings that can run but make little sense for this data (labels of the training and validation
    splits): said where the pipeline and the API load the data, never refused."""
    y_train, y_val = np.asarray(y_train), np.asarray(y_val)
    out = []
    if len(y_val) < 20 or min(np.bincount(y_val, minlength=2)) < 5:
        out.append(f"the validation split has {len(y_val)} stays ({int((y_val == 1).sum())} positive): early "
                   "stopping and every validation choice rest on them")
    positives = int((y_train == 1).sum())
    if profile.influence_folds > min(positives, len(y_train) - positives):
        out.append(f"influence_folds = {profile.influence_folds} but the training split has {positives} positive "
                   f"and {len(y_train) - positives} negative stays: some folds hold no stay of a label")
    for name in ("guide_train", "eval_train", "diffusion_train"):
        batch = getattr(profile, name).batch_size
        if batch > len(y_train):
            out.append(f"{name}.batch_size = {batch} is more than the {len(y_train)} training stays: each step "
                       "is one pass over them")
    return out


def parse_overrides(pairs) -> dict:
    """["guidance_scale=0.1", "n_seeds=5"] -> {"guidance_scale": "0.1", ...} (typed by with_overrides)."""
    out = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"--set needs key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out
