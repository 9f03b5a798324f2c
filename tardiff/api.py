"""Synthetic stays for one's own cohort in a few lines, without running the paper's notebooks.

    from tardiff.api import TarDiff
    model = TarDiff(profile="default").fit(X, y)          # X (N, T, F) finite, y (N,) 0/1
    X_syn, y_syn = model.sample("tardiff_dot", n=1000)   # in X's units, y_syn the labels generated
    model.save("my_tardiff"); model = TarDiff.load("my_tardiff")

`fit` trains what the chosen methods of the registry need (f_theta, the cross-fit influence references,
the class-conditional and unconditional diffusion models, the baseline generators) with the same functions
the notebooks call, and keeps what a models folder already holds for the same data, profile and seed;
`sample` runs any registered method (`tardiff.methods.REGISTRY`) whose models were fitted.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from tardiff import artifacts, methods as methods_lib, pipeline, stays
from tardiff.config import data_warnings, get_profile, with_overrides
from tardiff.generators import GENERATORS
from tardiff.generators.base import fingerprint
from tardiff.real_data import RealData
from tardiff.sampler import Sampler
from tardiff.utils import json_digest, to_jsonable, write_manifest

TASK = "label"
log = logging.getLogger(__name__)


class TarDiff:
    """Fit the classifier, influence references and diffusion models on (X, y); sample with any method."""

    def __init__(self, profile: str = "default", overrides: dict | None = None, seed: int = 0, device=None):
        self.profile_name, self.overrides, self.seed, self.device = profile, dict(overrides or {}), seed, device
        self.profile = with_overrides(get_profile(profile), **self.overrides)
        self.models_dir: Path | None = None
        self.scale: dict | None = None  # the model space's state: a ModelSpace's, or a stays file's Preprocessor's
        self._cohort: RealData | None = None  # model space, split for training and early stopping; no test

    # ---- fitting
    def fit(self, X, y, models_dir: str | Path | None = None, val_fraction: float = 0.1, methods=None,
            progress: bool = True, preprocessor: stays.Preprocessor | None = None) -> "TarDiff":
        """Train on (X, y) what `methods` need (default: every registered method): stratified `val_fraction` for
        early stopping, the rest for training. Models a folder already holds for the same data, profile and
        seed are kept, so fitting another method later trains only what it adds. The model space is the
        training rows' z-scores (`stays.ModelSpace`), or, for a stays file's (X, y), that file's own
        `preprocessor` (`preprocessor_of`), so the file lands where `reproduce --dataset` puts it."""
        X, y = stays.check_xy(X, y)
        if not 0.0 < val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
        needs = methods_lib.needs(methods or methods_lib.methods())
        is_val = stays.stratified_split(y, val_fraction, seed=self.seed)
        space = preprocessor or stays.ModelSpace.fit(X[~is_val])  # as real_data sets it for the same file
        self.scale = space.state()
        Z = space.to_model(X)
        for split, labels in (("training", y[~is_val]), ("validation", y[is_val])):
            if len(np.unique(labels)) < 2:
                raise ValueError(f"the {split} split has one label only; need both 0 and 1 (more stays or another "
                                 f"val_fraction)")
        self._cohort = _cohort(Z[~is_val], y[~is_val], Z[is_val], y[is_val])
        for warning in data_warnings(self.profile, y[~is_val], y[is_val]):
            log.warning(warning)
        self.models_dir = Path(models_dir) if models_dir else Path("tardiff_models")
        self.models_dir.mkdir(parents=True, exist_ok=True)
        key = self._fit_key(X, y, val_fraction, preprocessor)
        state = self._read_state(self.models_dir)
        fitted = set(state["fitted"]) if state and state.get("key") == key else set()
        if state and not fitted:
            raise ValueError(f"{self.models_dir} holds models fitted on other data or with another profile, seed or "
                             "val_fraction; use another --models folder")
        start = time.perf_counter()
        m, cohort, common = self.models_dir, self._cohort, {"seed": self.seed, "device": self.device,
                                                             "progress": progress}
        if "classifier" in needs - fitted:
            pipeline.train_guide_classifier(cohort, self.profile, m, **common)
        if "references" in needs - fitted:
            pipeline.build_references(cohort, self.profile, m, **common)
        jobs = {artifacts.diffusion(m, b, TASK): ("diffusion", cohort.X_train, cohort.y_train if b == "cond" else None)
                for b in ("cond", "uncond") if b in needs - fitted}
        jobs |= {artifacts.generator(m, g, TASK): (g, cohort.X_train, cohort.y_train)
                 for g in sorted(needs - fitted) if g in GENERATORS}
        pipeline.train_generative_models(jobs, self.profile, **common)
        self._write_state(key, sorted(fitted | needs), time.perf_counter() - start)
        return self

    def _fit_key(self, X: np.ndarray, y: np.ndarray, val_fraction: float, preprocessor=None) -> str:
        prep = json_digest(preprocessor.state()) if preprocessor is not None else ""
        return fingerprint(X, y) + prep + json.dumps([self.profile_name, to_jsonable(self.overrides), self.seed, val_fraction],
                                              sort_keys=True)

    @staticmethod
    def _read_state(folder: Path) -> dict | None:
        path = Path(folder) / "tardiff_state.json"
        return json.loads(path.read_text()) if path.exists() else None

    def fitted(self) -> set[str]:
        """What this fit holds: "classifier", "references", "cond", "uncond" and baseline generator names."""
        state = self._read_state(self.models_dir) if self.models_dir else None
        return set(state["fitted"]) if state else set()

    # ---- sampling
    def sample(self, method: str = methods_lib.DEFAULT_METHOD, n: int | dict | None = None, physical: bool = True,
               progress: bool = True, alpha: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(X_syn, y_syn): `n` stays (an int keeps the training label proportions, a dict {label: count} is
        explicit, None = the training set's counts), or `alpha` times the training stays (an augmentation set:
        real + alpha x synthetic, docs/augmentation.md), in X's units (`physical`) or z-scores."""
        if self._cohort is None:
            raise RuntimeError("call fit(X, y) or TarDiff.load(folder) first")
        if alpha is not None:
            if n is not None:
                raise ValueError("give n or alpha, not both")
            if not alpha > 0:
                raise ValueError(f"alpha must be > 0 (synthetic stays per real training stay), got {alpha}")
            n = max(1, int(round(alpha * len(self._cohort.y_train))))
        name = method
        missing = methods_lib.needs([name]) - self.fitted()
        if missing:
            raise RuntimeError(f"{name} needs {sorted(missing)}, not fitted in {self.models_dir}; fit(X, y, "
                               f"methods=[{name!r}]) first (python -m tardiff generate does it)")
        sampler = Sampler(self._cohort.X_train, self._cohort.y_train, TASK, self.profile, self.models_dir,
                          seed=self.seed, device=self.device, progress=progress, n=n)
        X, y, _ = sampler.sample(name)
        if physical:
            X = _space(self.scale).to_physical(X)
        return X.astype(np.float32), y

    # ---- persistence
    def save(self, folder: str | Path) -> Path:
        """Copy the fitted models and the state `load` needs to `folder`."""
        folder = Path(folder)
        if self.models_dir is None:
            raise RuntimeError("nothing to save: call fit first")
        if folder.resolve() != self.models_dir.resolve():
            shutil.copytree(self.models_dir, folder, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(f"*{artifacts.CHECKPOINTS}"))
        return folder

    @classmethod
    def load(cls, folder: str | Path, device=None) -> "TarDiff":
        folder = Path(folder)
        state_file = folder / "tardiff_state.json"
        if not state_file.exists():
            raise FileNotFoundError(f"{folder} holds no fitted TarDiff (no tardiff_state.json); fit and save first")
        state = json.loads(state_file.read_text())
        model = cls(state["profile"], state["overrides"], state["seed"], device)
        with np.load(folder / "tardiff_data.npz", allow_pickle=False) as data:
            model.scale = _space(data).state()
            model._cohort = _cohort(data["X_train"], data["y_train"], data["X_val"], data["y_val"])
        model.models_dir = folder
        return model

    def _write_state(self, key: str, fitted: list[str], wall_time_s: float) -> None:
        c = self._cohort
        tmp = self.models_dir / "tardiff_data.tmp.npz"
        np.savez_compressed(tmp, **self.scale,
                            X_train=c.X_train, y_train=c.y_train, X_val=c.X_val, y_val=c.y_val)
        tmp.replace(self.models_dir / "tardiff_data.npz")
        # the state file, written last and atomically, marks a complete fit (load() looks for it)
        tmp = self.models_dir / "tardiff_state.json.tmp"
        tmp.write_text(json.dumps({"profile": self.profile_name, "overrides": to_jsonable(self.overrides),
                                   "seed": self.seed, "key": key, "fitted": fitted}, indent=2))
        tmp.replace(self.models_dir / "tardiff_state.json")
        write_manifest(self.models_dir / "manifest.json", config=self.profile, seed=self.seed,
                       wall_time_s=wall_time_s, overrides=self.overrides, n_train=len(c.y_train), n_val=len(c.y_val),
                       fitted=fitted)


def _space(arrays):
    """The model space a fit saved: a stays file's Preprocessor (prep_* keys) or a ModelSpace (mean, sd, clip;
    a folder saved before the clip was stored had clip 5)."""
    return stays.Preprocessor.from_state(arrays) if "prep_median" in arrays else stays.ModelSpace.from_state(arrays)


def preprocessor_of(path: str | Path) -> stays.Preprocessor | None:
    """A stays file's own preprocessing (imputation, log1p, z-scores of its training split), None for a user's
    (X, y) file: `generate` fits in the same model space as `reproduce --dataset` for either."""
    data = stays.read_npz(Path(path))
    return stays.Preprocessor.from_state(data) if "prep_median" in data else None


def _cohort(X_train, y_train, X_val, y_val) -> RealData:
    return RealData(X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val, task=TASK, name="own cohort")


def load_xy(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) from a user's `.npz` (arrays X (N, T, F), y (N,)) or a stays `.npz` (its X_raw, imputed, and
    y_mortality); errors say what the file is and what is expected."""
    path = Path(path)
    expected = "an .npz with arrays X (N, T, F) and y (N,) of 0/1 labels"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; expected {expected}")
    data = stays.read_npz(path, expected)
    if "X_raw" in data:
        arrays = stays.load_stays(path)
        prep = stays.Preprocessor.from_state(arrays)
        keep = arrays["y_mortality"] >= 0
        return prep.impute(arrays["X_raw"])[keep], arrays["y_mortality"][keep]
    if not {"X", "y"} <= set(data):
        raise ValueError(f"{path}: has arrays {sorted(data)}; expected {expected}")
    return stays.check_xy(data["X"], data["y"], source=str(path))
