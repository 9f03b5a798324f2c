"""Real data: a PhysioNet 2012 folder from `tardiff extract`, an extractor's stays `.npz`, or a user's own (X, y).

One `RealData` per task: train and validation splits for fitting and selection, the test split scored only in
notebook 05; unknown labels dropped and counted.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tardiff import stays
from tardiff.config import Profile, data_warnings

log = logging.getLogger(__name__)
LABEL_KEYS = {"mortality": "y_mortality", "long_stay": "y_long_stay"}
USER_TASK = "label"


@dataclass
class RealData:
    """Real stays of one task, split: train/val for fitting and selection, test never touched until notebook 05.

    Unknown labels (-1, e.g. long stay without a discharge time) are dropped and counted in `dropped`
    (`<split>_unknown_label`); every split must hold both labels (AUROC/AUPRC need them).
    """

    X_train: np.ndarray  # (N, T, F) model space
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray | None = None  # None: a cohort fitted without a test split (tardiff.api)
    y_test: np.ndarray | None = None
    task: str = USER_TASK
    name: str = ""
    channels: tuple = ()
    preprocessor: stays.Preprocessor | None = None
    dropped: dict = field(default_factory=dict)

    def __post_init__(self):
        for split in ("train", "val", "test"):
            if split == "test" and self.X_test is None and self.y_test is None:
                continue
            X, y = np.asarray(getattr(self, f"X_{split}"), np.float32), np.asarray(getattr(self, f"y_{split}"))
            if len(X) != len(y):
                raise ValueError(f"{self.name or 'real data'}: {split} has {len(X)} stays but {len(y)} labels")
            known = y >= 0
            if bad := sorted(set(np.unique(y[known]).tolist()) - {0, 1}):
                raise ValueError(f"{self.name or 'real data'}: {split} labels must be 0, 1 or -1 (unknown), "
                                 f"found {bad}")
            if (~known).any():
                key = f"{split}_unknown_label"
                self.dropped[key] = self.dropped.get(key, 0) + int((~known).sum())
            X, y = X[known], y[known].astype(np.int64)
            if len(np.unique(y)) < 2:
                raise ValueError(f"{self.name or 'real data'}: the {split} split has only label "
                                 f"{np.unique(y).tolist()} for task {self.task!r}; both classes are needed")
            setattr(self, f"X_{split}", X)
            setattr(self, f"y_{split}", y)

    @property
    def n_excluded(self) -> int:
        """Stays left out for an unknown label (subsampling by the profile is not an exclusion)."""
        return int(sum(n for key, n in self.dropped.items() if key.endswith("unknown_label")))

    def summary(self) -> dict:
        return {"dataset": self.name, "task": self.task, "train": len(self.y_train),
                "val": len(self.y_val), "test": 0 if self.y_test is None else len(self.y_test),
                "train_positive_rate": float(self.y_train.mean()), "dropped": self.dropped}


def dataset_files(dataset: str | Path) -> list[Path]:
    """The input files of a dataset: a folder with set-a.npz and set-b.npz, or one `.npz`."""
    dataset = Path(dataset)
    if dataset.is_dir():
        files = [dataset / "set-a.npz", dataset / "set-b.npz"]
        missing = [str(f) for f in files if not f.exists()]
        if missing == [str(files[1])]:  # extraction ran, but the archives had no test set
            raise FileNotFoundError(f"dataset folder {dataset} has set-a.npz but no set-b.npz: the PhysioNet "
                                    f"folder extracted by notebook 01 lacks set-b.tar.gz (the test set); put "
                                    f"set-b.tar.gz and Outcomes-b.txt beside set-a.tar.gz and rerun notebook 01")
        if missing:
            raise FileNotFoundError(f"dataset folder {dataset} lacks {missing}: run notebook 01 "
                                    f"(`python -m tardiff extract --out {dataset}`) first")
        return files
    if not dataset.exists():
        raise FileNotFoundError(f"dataset not found: {dataset} (a folder from `tardiff extract`, "
                                f"a `.npz` from data_preprocess/, or your own `.npz` with X and y)")
    return [dataset]


def tasks_for(dataset: str | Path, requested: tuple) -> tuple:
    """A user's own (X, y) file has one task, `label`; stays files have mortality and long stay."""
    files = dataset_files(dataset)
    if len(files) == 1 and "X_raw" not in stays.read_npz(files[0]):
        return (USER_TASK,)
    return tuple(requested)


def load_real(dataset: str | Path, task: str, profile: Profile, seed: int = 0) -> RealData:
    files = dataset_files(dataset)
    if len(files) == 2:  # PhysioNet 2012: set-a train/val, set-b test
        a, b = stays.load_stays(files[0]), stays.load_stays(files[1])
        parts = {"train": _rows(a, a["split"] == "train"), "val": _rows(a, a["split"] == "val"),
                 "test": _rows(b, np.ones(len(b["X"]), bool))}
        preprocessor, channels, name = stays.Preprocessor.from_state(a), tuple(a["channels"]), "physionet2012"
    else:
        arrays, preprocessor, channels = _load_single(files[0])
        if "split" not in arrays:
            raise stays.StayFormatError(f"{files[0]}: needs a `split` key with train/val/test rows")
        parts = {s: _rows(arrays, arrays["split"] == s) for s in ("train", "val", "test")}
        name = files[0].stem
    dropped, out = {}, {}
    for split, arrays in parts.items():
        X, y = arrays["X"], _labels(arrays, task, files[0])
        known = y >= 0
        if (~known).any():
            dropped[f"{split}_unknown_label"] = int((~known).sum())
            log.warning("%s/%s: %d stays without a %s label left out", name, split, (~known).sum(), task)
        X, y = X[known], y[known]
        limit = profile.max_train_stays if split == "train" else profile.max_test_stays if split == "test" else None
        if limit is not None and len(y) > limit:
            keep = np.sort(np.random.default_rng(seed).choice(len(y), size=limit, replace=False))
            X, y = X[keep], y[keep]
            dropped[f"{split}_subsampled_by_profile"] = int(known.sum() - limit)
        out[f"X_{split}"], out[f"y_{split}"] = X, y
    real = RealData(**out, task=task, name=name, channels=channels, preprocessor=preprocessor, dropped=dropped)
    for warning in data_warnings(profile, real.y_train, real.y_val):
        log.warning("%s/%s: %s", name, task, warning)
    return real


def _rows(arrays: dict, keep: np.ndarray) -> dict:
    return {k: v[keep] for k, v in arrays.items() if getattr(v, "shape", ())[:1] == keep.shape}


def _labels(arrays: dict, task: str, source: Path) -> np.ndarray:
    key = "y" if task == USER_TASK else LABEL_KEYS.get(task)
    if key is None or key not in arrays:
        raise ValueError(f"{source}: no labels for task {task!r} (have {sorted(arrays)})")
    return np.asarray(arrays[key]).astype(np.int64)


def _load_single(path: Path):
    """A stays `.npz` (data_preprocess/) or a user's own `.npz` with X (N, T, F) and y (N,)."""
    data = stays.read_npz(path)
    keys = set(data)
    if "X_raw" in keys:
        arrays = stays.load_stays(path)
        return arrays, stays.Preprocessor.from_state(arrays) if "prep_mean" in arrays else None, \
            tuple(arrays["channels"])
    if not {"X", "y"} <= keys:
        raise stays.StayFormatError(f"{path}: a user dataset needs arrays `X` (N, T, F) and `y` (N,) "
                                    f"of 0/1 labels; found {sorted(keys)}")
    X, y = stays.check_xy(data["X"], data["y"], source=str(path))
    split = np.full(len(y), "train", dtype="<U5")
    is_test = stays.stratified_split(y, 0.2, seed=0)
    split[is_test] = "test"
    rest = np.flatnonzero(~is_test)
    split[rest[stays.stratified_split(y[rest], 0.125, seed=1)]] = "val"
    # the model space of the training rows, as `tardiff generate` (tardiff.api) sets for the same file
    space = stays.ModelSpace.fit(X[split == "train"])
    channels = tuple(f"f{j}" for j in range(X.shape[2]))
    return {"X": space.to_model(X), "y": y, "split": split}, None, channels


def describe(sources: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Cohort overview and per-channel table of each source; also returns the stays files loaded.

    A user's own (X, y) file has no physical units or mask: it gets counts and model-space means only.
    """
    overview, per_channel, loaded = [], [], {}
    for name, path in sources.items():
        if "X_raw" in stays.read_npz(path):
            loaded[name] = arrays = stays.load_stays(path)
            overview.append(stays.cohort_overview(arrays, name))
            per_channel.append(stays.cohort_summary(arrays, name))
        else:
            arrays, _, channels = _load_single(Path(path))
            X, y = arrays["X"], arrays["y"]
            overview.append({"dataset": name, "stays": len(y), "positive_rate": float(y.mean()),
                             "hours": X.shape[1], "features": X.shape[2]})
            per_channel.append(pd.DataFrame({"dataset": name, "channel": channels,
                                             "mean_negative": X[y == 0].mean(axis=(0, 1)),
                                             "mean_positive": X[y == 1].mean(axis=(0, 1))}))
    return pd.DataFrame(overview), pd.concat(per_channel, ignore_index=True), loaded
