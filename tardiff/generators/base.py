"""The interface every baseline generator shares: fit / sample / save / load, one label rule, checkpoints.

    gen = get_generator("timegan").fit(X, y, seed=0)     # X (N, T, F) model space, y (N,) labels or None
    X_syn = gen.sample(y_wanted, seed=1)                 # (len(y_wanted), T, F), in X's model space
    gen.save("models/timegan"); gen = load_generator("models/timegan")

The label rule (docs/generators.md): a generator its authors published without conditioning
(TimeGAN, TimeVAE, Diffusion-TS) is trained once per label, on that label's stays, and sampled at that
label's count; TimeVQVAE and BioDiffusion condition on the label with their own class-conditional
machinery. `y=None` fits one unlabelled model (the Sines / Stocks benchmarks).

A subclass supplies the authors' method in three functions: `build` (the networks, one nn.Module),
`train` (their losses, phases and schedules) and `generate` (their sampler), working in the authors'
normalised space (`scaling`); this class does the checks, the per-label split, the scaling and its
inverse, seeding, resumable checkpoints, progress, persistence and the manifest.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tardiff.utils import get_device, to_jsonable, write_manifest

MODEL_FILE = "generator.pt"
MANIFEST_FILE = "manifest.json"


# --------------------------------------------------------------------------- the authors' normalisations

@dataclass
class Scaler:
    """Min-max scaling as the authors' code does it, fitted on one model's training stays.

    kind: "minmax01"  per feature over stays and time, to [0, 1] (TimeGAN, Diffusion-TS's MinMaxScaler);
          "minmax11"  the same, then to [-1, 1] (Diffusion-TS and BioDiffusion's `normalize_to_neg_one_to_one`);
          "minmax01_tf" per (time step, feature) over stays, to [0, 1] (TimeVAE's `np.min(data, 0)` on 3-D data);
          "two_x_minus_1" 2x − 1, nothing fitted (Diffusion-TS's SineDataset: data already in [0, 1]);
          "none"      identity.
    """

    kind: str
    low: np.ndarray | None = None
    span: np.ndarray | None = None
    KINDS: ClassVar[tuple] = ("minmax01", "minmax11", "minmax01_tf", "two_x_minus_1", "none")

    @classmethod
    def fit(cls, kind: str, X: np.ndarray) -> "Scaler":
        if kind not in cls.KINDS:
            raise ValueError(f"unknown scaling {kind!r}; one of {cls.KINDS}")
        if kind in ("none", "two_x_minus_1"):
            return cls(kind)
        axes = (0,) if kind == "minmax01_tf" else (0, 1)
        low = X.min(axis=axes, keepdims=True)
        return cls(kind, low.astype(np.float64), (X.max(axis=axes, keepdims=True) - low).astype(np.float64))

    def forward(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "none":
            return np.asarray(X, np.float32)
        if self.kind == "two_x_minus_1":
            return (2 * np.asarray(X, np.float64) - 1).astype(np.float32)
        Z = (X - self.low) / (self.span + 1e-7)
        return (2 * Z - 1 if self.kind == "minmax11" else Z).astype(np.float32)

    def inverse(self, Z: np.ndarray) -> np.ndarray:
        if self.kind == "none":
            return np.asarray(Z, np.float32)
        if self.kind == "two_x_minus_1":
            return ((np.asarray(Z, np.float64) + 1) / 2).astype(np.float32)
        Z = (Z + 1) / 2 if self.kind == "minmax11" else Z
        return (Z * (self.span + 1e-7) + self.low).astype(np.float32)

    def state(self) -> dict:
        return {"kind": self.kind, "low": self.low, "span": self.span}


# --------------------------------------------------------------------------- resumable training

class Checkpoint:
    """Periodic, atomic training checkpoints that a rerun resumes from, bit-identically on a CPU.

    A training loop registers what carries state (modules, optimisers, schedulers, torch.Generator,
    numpy Generator) once, with `restore(...)`, which loads them if a checkpoint exists and returns the
    saved progress ({} when starting); then calls `step(progress, ...)` after every step, which saves
    every `every` steps and when asked (`final=True`). The global torch RNG (dropout) is saved too.
    A checkpoint written with another config, seed or data is refused, never silently resumed. Long steps
    or epochs are also saved every `every_s` seconds, so no more than that is lost to an interruption.
    """

    def __init__(self, path: str | Path | None, meta: dict, every: int = 1000, every_s: float = 600.0):
        self.path = Path(path) if path is not None else None
        self.meta = json.loads(json.dumps(to_jsonable(meta)))
        self.every, self.every_s = max(1, int(every)), every_s
        self.stateful: dict = {}
        self._before, self._started = 0.0, time.perf_counter()
        self._saved = self._started

    @property
    def elapsed(self) -> float:
        """Training seconds so far, over every resumed run."""
        return self._before + time.perf_counter() - self._started

    def restore(self, **stateful) -> dict:
        self.stateful = stateful
        self._started = time.perf_counter()
        if self.path is None or not self.path.exists():
            return {}
        blob = torch.load(self.path, map_location="cpu", weights_only=False)
        if blob["meta"] != self.meta:
            raise ValueError(f"{self.path} was written by a run with another config, seed or data; delete it or "
                             "use another checkpoint folder")
        for name, obj in stateful.items():
            _load_state(obj, blob["state"][name])
        torch.set_rng_state(blob["torch_rng"])
        self._before = blob["elapsed"]
        return blob["progress"]

    def step(self, progress: dict, count: int, final: bool = False) -> None:
        """Save when `count` (steps or epochs done) reaches a multiple of `every`, `every_s` have passed, or
        `final`."""
        if self.path is None or not (final or count % self.every == 0
                                     or time.perf_counter() - self._saved > self.every_s):
            return
        self._saved = time.perf_counter()
        blob = {"meta": self.meta, "progress": copy.deepcopy(progress), "torch_rng": torch.get_rng_state(),
                "elapsed": self.elapsed, "state": {name: _state_of(obj) for name, obj in self.stateful.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, self.path)  # an interrupted save never corrupts the last good checkpoint


def _state_of(obj):
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, np.random.Generator):
        return obj.bit_generator.state
    state = obj.state_dict()
    return {k: v.detach().cpu().clone() for k, v in state.items()} if isinstance(obj, nn.Module) else \
        copy.deepcopy(state)


def _load_state(obj, state) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    elif isinstance(obj, np.random.Generator):
        obj.bit_generator.state = state
    else:
        obj.load_state_dict(state)


def progress_bar(total: int, initial: int, desc: str, progress: bool):
    return tqdm(total=total, initial=min(initial, total), desc=desc, disable=not progress, leave=False)


# --------------------------------------------------------------------------- input checks

def check_xy(X, y=None, what: str = "X") -> tuple[np.ndarray, np.ndarray | None]:
    """(X float32 (N, T, F) finite, y int64 (N,) >= 0 or None), or a ValueError a user can act on."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 3:
        raise ValueError(f"{what} must be (stays, time steps, features), got shape {X.shape}")
    if len(X) < 2 or X.shape[1] < 2:
        raise ValueError(f"{what} needs at least 2 stays of at least 2 time steps, got shape {X.shape}")
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=(1, 2)).sum())
        raise ValueError(f"{what} has NaN/inf values in {bad} stays; impute them first")
    if y is None:
        return X, None
    y = np.asarray(y)
    if y.shape != (len(X),):
        raise ValueError(f"y must have shape ({len(X)},), one label per stay, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise ValueError(f"y must hold integer class labels, found {np.unique(y)[:5].tolist()}")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise ValueError(f"y must hold class labels 0, 1, ..., found {int(y.min())}; drop unknown labels (-1) first")
    labels = np.unique(y)
    if len(labels) < 2:
        raise ValueError(f"y holds a single label ({int(labels[0])}); a label-aware generator needs at least two "
                         "classes (pass y=None to fit one unlabelled model)")
    return X, y


def fingerprint(X: np.ndarray, y: np.ndarray | None) -> str:
    """sha256 of the training arrays: a checkpoint is never resumed on other data; the manifest's input checksum."""
    digest = hashlib.sha256(np.ascontiguousarray(X, np.float32).tobytes())
    if y is not None:
        digest.update(np.ascontiguousarray(y, np.int64).tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- the generator

@dataclass
class _Part:
    """One trained model: all stays (y=None or natively conditioned) or one label's stays."""

    model: nn.Module
    scaler: Scaler
    n_train: int
    history: dict

    def device(self) -> torch.device:
        tensor = next(iter(self.model.parameters()), None)
        return tensor.device if tensor is not None else torch.device("cpu")


class Generator:
    """A subclass names itself in its class statement and writes build/train/generate:

        class TimeGAN(Generator, name="timegan", config=TimeGANConfig, native_labels=False, scaling="minmax01")

    native_labels: one model conditioned on y (True) or one model per label (False); scaling: the authors'
    normalisation of the training stays (a Scaler kind; a config field `scaling`, when set, overrides it);
    sampling_fields: config fields training never reads (a checkpoint stays valid when they change);
    budget_fields: the config's training-length counts (what an equal-compute budget sets: config.EQUAL_BUDGET)
    and budget_unit whether they count optimiser "steps" or "epochs". With `label_budget="shared"` a per-label
    fit treats step counts as the task's total and gives each label model its share in proportion to its stays,
    so every label model trains the same number of epochs (epoch counts need no split: an epoch over a label's
    stays already costs its share).
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    native_labels: ClassVar[bool] = False
    scaling: ClassVar[str] = "none"
    sampling_fields: ClassVar[tuple] = ("sample_batch_size",)
    budget_fields: ClassVar[tuple] = ()
    budget_unit: ClassVar[str] = "steps"
    LABEL_BUDGETS: ClassVar[tuple] = ("each", "shared")

    def __init_subclass__(cls, name: str, config: type, native_labels: bool, scaling: str,
                          sampling_fields: tuple = ("sample_batch_size",), budget_fields: tuple = (),
                          budget_unit: str = "steps", **kwargs):
        super().__init_subclass__(**kwargs)
        if scaling not in Scaler.KINDS:
            raise ValueError(f"generator {name}: unknown scaling {scaling!r}; one of {Scaler.KINDS}")
        if budget_unit not in ("steps", "epochs"):
            raise ValueError(f"generator {name}: budget_unit must be 'steps' or 'epochs', got {budget_unit!r}")
        cls.name, cls.config_class, cls.native_labels, cls.scaling = name, config, native_labels, scaling
        cls.sampling_fields = tuple(sampling_fields)
        cls.budget_fields, cls.budget_unit = tuple(budget_fields), budget_unit

    def __init__(self, config=None, **overrides):
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{self.name}: config must be a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = replace(config, **overrides) if overrides else config
        self.parts: dict[int | None, _Part] = {}
        self.info: dict = {}

    # ---- what a subclass writes
    def build(self, n_features: int, seq_len: int, n_classes: int | None) -> nn.Module:
        """The networks, as one module (initialised under the fit's seed)."""
        raise NotImplementedError

    def train(self, model: nn.Module, X: np.ndarray, y: np.ndarray | None, seed: int, device: torch.device,
              checkpoint: Checkpoint, progress: bool) -> dict:
        """Train `model` in place on X (N, T, F) in the scaled space; return a history with at least
        {"steps": optimisation steps done, "loss": [...] or a dict of lists}. Register every stateful
        object with `checkpoint.restore(...)` before the loop and call `checkpoint.step(...)` in it."""
        raise NotImplementedError

    def generate(self, model: nn.Module, n: int, y: np.ndarray | None, seed: int, device: torch.device,
                 progress: bool) -> np.ndarray:
        """(n, T, F) float32 in the scaled space; y (n,) the labels asked for (native_labels) or None."""
        raise NotImplementedError

    # ---- fitting
    def fit(self, X, y=None, seed: int = 0, device=None, checkpoint_dir: str | Path | None = None,
            checkpoint_every: int = 1000, progress: bool = True, label_budget: str = "each") -> "Generator":
        """Train on X (N, T, F) in model space, y (N,) class labels or None; resumes from `checkpoint_dir`.

        label_budget: "each" (every label model gets the config's counts: the authors' settings per model) or
        "shared" (the counts are the task's, split between label models: see the class docstring)."""
        if label_budget not in self.LABEL_BUDGETS:
            raise ValueError(f"label_budget must be one of {self.LABEL_BUDGETS}, got {label_budget!r}")
        X, y = check_xy(X, y)
        device = get_device(device)
        start = time.perf_counter()
        n_classes = int(y.max()) + 1 if y is not None else None
        groups = {None: (X, y)} if y is None or self.native_labels else \
            {int(label): (X[y == label], None) for label in np.unique(y)}
        self.parts = {}
        for key, (X_part, y_part) in groups.items():
            if len(X_part) < 2:
                raise ValueError(f"{self.name}: label {key} has {len(X_part)} stay(s); need at least 2 to fit a model")
            full_config = self.config
            try:  # build and train read self.config: while a label model fits, its share of the budget
                if key is not None and label_budget == "shared":
                    self.config = self.label_share(full_config, len(X_part), len(X))
                self.parts[key] = self._fit_part(key, X_part, y_part, X.shape, n_classes, seed, device,
                                                 checkpoint_dir, checkpoint_every, progress)
            finally:
                self.config = full_config
        self.info = {"seed": seed, "n_features": X.shape[2], "seq_len": X.shape[1], "n_classes": n_classes,
                     "labels": None if y is None else np.unique(y).tolist(),
                     "counts": None if y is None else np.bincount(y).tolist(), "n_train": len(X),
                     "input_sha256": fingerprint(X, y), "fit_wall_time_s": time.perf_counter() - start,
                     "device": str(device), "label_budget": label_budget}
        return self

    def _fit_part(self, key, X_part, y_part, shape, n_classes, seed, device, checkpoint_dir, checkpoint_every,
                  progress) -> _Part:
        part_seed = self.part_seed(seed, key)
        scaler = Scaler.fit(getattr(self.config, "scaling", None) or self.scaling, X_part)
        Z = scaler.forward(X_part)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(part_seed)
            model = self.build(shape[2], shape[1], n_classes).to(device)
            path = None if checkpoint_dir is None else Path(checkpoint_dir) / f"{self.name}_{_part_name(key)}.pt"
            config = {k: v for k, v in asdict(self.config).items() if k not in self.sampling_fields}
            meta = {"generator": self.name, "config": config, "seed": part_seed, "data": fingerprint(Z, y_part)}
            checkpoint = Checkpoint(path, meta, checkpoint_every)
            history = self.train(model, Z, y_part, part_seed, device, checkpoint, progress)
            history["wall_time_s"] = checkpoint.elapsed
        return _Part(model.eval(), scaler, len(X_part), history)

    def label_share(self, config, n_part: int, n_total: int):
        """`config` with its step counts scaled to a label model's share of the task's stays (at least 1)."""
        if self.budget_unit != "steps":
            return config
        scaled = {f: max(1, round(getattr(config, f) * n_part / n_total)) for f in self.budget_fields
                  if getattr(config, f) is not None}
        return replace(config, **scaled)

    @staticmethod
    def part_seed(seed: int, key: int | None) -> int:
        """Each label's model its own stream, reproducible from the fit's seed."""
        return seed if key is None else seed + 1_000_003 * (key + 1)

    # ---- sampling
    def sample(self, y, seed: int = 0, device=None, progress: bool = True) -> np.ndarray:
        """(len(y), T, F) float32 in the fit's model space: stay i generated for label y[i].

        y: the labels wanted (N,), or a count N for a model fitted without labels.
        """
        if not self.parts:
            raise RuntimeError(f"{self.name}: call fit(X, y) or load_generator(folder) first")
        unlabelled = self.info["labels"] is None
        if np.isscalar(y) and not isinstance(y, (str, bytes)):
            if not unlabelled:
                raise ValueError(f"{self.name} was fitted with labels {self.info['labels']}; pass the labels wanted, "
                                 "not a count")
            n = int(y)
            if n < 0:
                raise ValueError(f"cannot sample {n} stays")
            y = None
        else:
            y = np.asarray(y)
            if y.ndim != 1:
                raise ValueError(f"y must be a 1-D array of labels, got shape {y.shape}")
            n = len(y)
            if unlabelled:
                raise ValueError(f"{self.name} was fitted without labels; pass a count of stays instead of labels")
            if n and not np.issubdtype(y.dtype, np.integer):
                raise ValueError(f"y must hold integer labels, got dtype {y.dtype}")
            unknown = sorted(set(np.unique(y).tolist()) - set(self.info["labels"]))
            if unknown:
                raise ValueError(f"{self.name}: labels {unknown} were not in the fitted data (labels "
                                 f"{self.info['labels']})")
            y = y.astype(np.int64)
        device = get_device(device) if device is not None else next(iter(self.parts.values())).device()
        out = np.empty((n, self.info["seq_len"], self.info["n_features"]), np.float32)
        if y is None or self.native_labels:
            part = self.parts[None]
            out[:] = part.scaler.inverse(self._generate(part, n, y, seed, None, device, progress))
        else:
            for label in np.unique(y):
                where = np.flatnonzero(y == label)
                part = self.parts[int(label)]
                out[where] = part.scaler.inverse(self._generate(part, len(where), None, seed, int(label), device,
                                                                progress))
        return out

    def _generate(self, part: _Part, n: int, y, seed: int, key, device, progress) -> np.ndarray:
        if n == 0:
            return np.zeros((0, self.info["seq_len"], self.info["n_features"]), np.float32)
        part.model.to(device).eval()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            part_seed = self.part_seed(seed, key)
            torch.manual_seed(part_seed)
            Z = self.generate(part.model, n, y, part_seed, device, progress)
        Z = np.asarray(Z, np.float32)
        if Z.shape != (n, self.info["seq_len"], self.info["n_features"]):
            raise RuntimeError(f"{self.name}.generate returned shape {Z.shape}, expected "
                               f"{(n, self.info['seq_len'], self.info['n_features'])}")
        return Z

    # ---- persistence
    def save(self, folder: str | Path) -> Path:
        """generator.pt (config, scalers, weights, histories) and manifest.json, written atomically."""
        if not self.parts:
            raise RuntimeError(f"{self.name}: nothing to save; call fit first")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        blob = {"generator": self.name, "config": asdict(self.config), "info": self.info,
                "parts": {_part_name(k): {"key": k, "state_dict": {n: v.detach().cpu() for n, v in
                                                                  p.model.state_dict().items()},
                                          "scaler": p.scaler.state(), "n_train": p.n_train, "history": p.history}
                          for k, p in self.parts.items()}}
        tmp = folder / (MODEL_FILE + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, folder / MODEL_FILE)
        write_manifest(folder / MANIFEST_FILE, config={"generator": self.name, **asdict(self.config)},
                       seed=self.info["seed"], inputs={"X, y (training arrays)": self.info["input_sha256"]},
                       wall_time_s=self.info["fit_wall_time_s"],
                       info={k: v for k, v in self.info.items() if k not in ("input_sha256", "fit_wall_time_s")},
                       parts={_part_name(k): {"n_train": p.n_train, **summarise(p.history)}
                              for k, p in self.parts.items()})
        return folder

    @classmethod
    def _from_blob(cls, blob: dict, device) -> "Generator":
        gen = cls(config_from_dict(cls.config_class, blob["config"]))
        gen.info = blob["info"]
        device = get_device(device)
        for part in blob["parts"].values():
            with torch.random.fork_rng(devices=[]):
                model = gen.build(gen.info["n_features"], gen.info["seq_len"], gen.info["n_classes"])
            model.load_state_dict(part["state_dict"])
            scaler = Scaler(part["scaler"]["kind"], part["scaler"]["low"], part["scaler"]["span"])
            gen.parts[part["key"]] = _Part(model.to(device).eval(), scaler, part["n_train"], part["history"])
        return gen


def _part_name(key: int | None) -> str:
    return "all" if key is None else f"label{key}"


def summarise(history: dict) -> dict:
    """Steps, wall time and the last value of each loss series, for the manifest."""
    out = {k: history[k] for k in ("steps", "wall_time_s", "epochs", "stopped_early") if k in history}
    losses = history.get("loss")
    if isinstance(losses, dict):
        out["final_loss"] = {k: float(v[-1]) for k, v in losses.items() if len(v)}
    elif losses:
        out["final_loss"] = float(losses[-1])
    return out


def config_from_dict(config_class: type, values: dict):
    """A config dataclass from its asdict() (tuples restored, nested dataclasses rebuilt)."""
    kwargs = {}
    for f in fields(config_class):
        if f.name not in values:
            continue
        value = values[f.name]
        default = config_class().__getattribute__(f.name) if _has_default(config_class) else None
        if is_dataclass(default) and isinstance(value, dict):
            value = config_from_dict(type(default), value)
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[f.name] = value
    return config_class(**kwargs)


def _has_default(config_class: type) -> bool:
    try:
        config_class()
        return True
    except TypeError:
        return False
