"""The common stay format every extractor writes and every notebook reads.

One sample per ICU stay: (T, F) hourly values of the 8 channels below, in
physical units, with a mask of what was observed. PhysioNet 2012
(`tardiff.data`), MIMIC-III and eICU (`data_preprocess/`) and a user's own
arrays all end up as the same `.npz`, checked by `load_stays`.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

CHANNELS = ("HR", "SBP", "DBP", "MAP", "RR", "Temp", "SaO2", "Urine")
UNITS = {"HR": "bpm", "SBP": "mmHg", "DBP": "mmHg", "MAP": "mmHg", "RR": "breaths/min",
         "Temp": "°C", "SaO2": "%", "Urine": "mL/h"}
# Physiologically possible range per channel (inclusive). Values outside are
# recording errors (PhysioNet 2012 uses -1 for "not measured"; 0 bpm, 0 mmHg or
# a temperature of 1 °C are charting artefacts) and are treated as missing,
# counted per parameter in the extraction manifest.
VALID_RANGES = {
    "HR": (10.0, 300.0),
    "SBP": (20.0, 300.0),
    "DBP": (5.0, 250.0),
    "MAP": (10.0, 300.0),
    "RR": (1.0, 100.0),
    "Temp": (20.0, 45.0),
    "SaO2": (20.0, 100.0),
    "Urine": (0.0, 5000.0),
}
# Urine output is a volume per hour: summed within an hour, every other channel averaged.
SUM_CHANNELS = frozenset({"Urine"})
# Transform applied before z-scoring: urine output is heavy tailed (tens of sd at the top).
LOG_CHANNELS = frozenset({"Urine"})

REQUIRED_KEYS = ("X_raw", "mask", "X", "record_id", "y_mortality", "y_long_stay", "channels")
LONG_STAY_DAYS = 14


class StayFormatError(ValueError):
    """A stays file or array does not have the documented shape, type or content."""


def channel_index(name: str) -> int:
    return CHANNELS.index(name)


def out_of_range(values: np.ndarray, channel_idx: np.ndarray) -> np.ndarray:
    """Boolean mask of values outside their channel's VALID_RANGES (NaN counts as out)."""
    low = np.array([VALID_RANGES[c][0] for c in CHANNELS])[channel_idx]
    high = np.array([VALID_RANGES[c][1] for c in CHANNELS])[channel_idx]
    with np.errstate(invalid="ignore"):
        return ~((values >= low) & (values <= high))


def bin_hourly(stay_idx: np.ndarray, hour: np.ndarray, channel_idx: np.ndarray,
               values: np.ndarray, n_stays: int, n_hours: int = 24) -> np.ndarray:
    """Long-format measurements -> (n_stays, n_hours, F) hourly means (sums for SUM_CHANNELS).

    `hour` is the integer hour since admission; rows outside [0, n_hours) must be
    dropped by the caller. Vectorised: one bincount, no loop over stays.
    """
    n_channels = len(CHANNELS)
    flat = (stay_idx.astype(np.int64) * n_hours + hour.astype(np.int64)) * n_channels + channel_idx
    size = n_stays * n_hours * n_channels
    total = np.bincount(flat, weights=values.astype(np.float64), minlength=size)
    count = np.bincount(flat, minlength=size).astype(np.float64)
    total = total.reshape(n_stays, n_hours, n_channels)
    count = count.reshape(n_stays, n_hours, n_channels)
    is_sum = np.array([c in SUM_CHANNELS for c in CHANNELS])
    with np.errstate(invalid="ignore", divide="ignore"):
        binned = np.where(is_sum, total, total / count)
    binned[count == 0] = np.nan
    return binned.astype(np.float32)


def prefer(primary: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Per hour, the primary value (e.g. invasive BP) where observed, else the fallback."""
    return np.where(np.isnan(primary), fallback, primary)


def forward_fill(X_raw: np.ndarray) -> np.ndarray:
    """Carry the last observation forward along time, per stay and channel; leading NaNs stay."""
    n, t, f = X_raw.shape
    observed = ~np.isnan(X_raw)
    last = np.where(observed, np.arange(t)[None, :, None], -1)
    last = np.maximum.accumulate(last, axis=1)  # (N, T, F): index of the last observed hour
    filled = np.take_along_axis(X_raw, np.maximum(last, 0), axis=1)
    filled[last < 0] = np.nan
    return filled


def check_xy(X, y, source: str = "") -> tuple[np.ndarray, np.ndarray]:
    """A user's (X, y) as (float32 (N, T, F) finite, int64 (N,) of 0/1), or a StayFormatError naming `source`."""
    where = f"{source}: " if source else ""
    X, y = np.asarray(X, dtype=np.float32), np.asarray(y)
    if X.ndim != 3:
        raise StayFormatError(f"{where}X must be (N, T, F) (stays, hours, channels), got shape {X.shape}")
    if y.shape != (len(X),):
        raise StayFormatError(f"{where}y must have shape ({len(X)},), one label per stay, got {y.shape}")
    if not np.isfinite(X).all():
        raise StayFormatError(f"{where}X has NaN/inf in {int((~np.isfinite(X)).any(axis=(1, 2)).sum())} stays; "
                              f"impute first (the models need complete input)")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise StayFormatError(f"{where}y must hold 0/1 labels, found {np.unique(y)[:10].tolist()}")
    return X, y.astype(np.int64)


@dataclass(frozen=True, eq=False)
class ModelSpace:
    """The units every model sees: per-channel z-scores clipped to ±clip, mean and sd of the training rows only.

    The one definition for stays files (after imputation and log1p, `Preprocessor`) and a user's own (X, y)
    (`tardiff.api`, `tardiff.real_data`); `to_physical` maps model-space samples back.
    """

    mean: np.ndarray  # (F,) float32, in the units of the fitted values
    sd: np.ndarray    # (F,) float32, > 0
    clip: float = 5.0

    @classmethod
    def fit(cls, X_train: np.ndarray, clip: float = 5.0) -> "ModelSpace":
        """Mean and sd per channel over the stays and hours of the training rows (..., F); NaN (unobserved) is
        left out, and an sd below 1e-6 becomes 1 so a constant channel is 0, not a division by ~0."""
        flat = np.asarray(X_train, dtype=np.float64).reshape(-1, np.shape(X_train)[-1])  # (N*T, F)
        empty = np.flatnonzero(np.isnan(flat).all(axis=0))
        if empty.size:
            raise ValueError(f"channels {empty.tolist()} have no value in the training rows")
        mean = np.nanmean(flat, axis=0)
        sd = np.nanstd(flat, axis=0)
        sd = np.where(sd > 1e-6, sd, 1.0)
        return cls(mean=mean.astype(np.float32), sd=sd.astype(np.float32), clip=float(clip))

    def to_model(self, X: np.ndarray) -> np.ndarray:
        """(..., F) values in the fitted units -> float32 z-scores clipped to ±clip."""
        z = (np.asarray(X, dtype=np.float64) - self.mean) / self.sd
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def to_physical(self, Z: np.ndarray) -> np.ndarray:
        """Model-space values -> the fitted units; the inverse of `to_model` wherever it did not clip."""
        return (np.asarray(Z, dtype=np.float64) * self.sd + self.mean).astype(np.float32)

    def state(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}mean": self.mean, f"{prefix}sd": self.sd, f"{prefix}clip": np.float32(self.clip)}

    @classmethod
    def from_state(cls, arrays, prefix: str = "") -> "ModelSpace":
        """From `state(prefix)` arrays (a dict or an open `.npz`); a state saved without a clip had clip 5."""
        return cls(mean=np.asarray(arrays[f"{prefix}mean"]), sd=np.asarray(arrays[f"{prefix}sd"]),
                   clip=float(arrays.get(f"{prefix}clip", 5.0)))


@dataclass
class Preprocessor:
    """Imputation and scaling fitted on the training split only, invertible to physical units.

    Model input X = space.to_model(transform(ffill-then-median(X_raw))), with transform = log1p for
    LOG_CHANNELS and `space` the ModelSpace of the transformed training values. `to_physical` maps
    model-space samples back.
    """

    median: np.ndarray = field(default=None)  # (F,) physical units
    space: ModelSpace = field(default=None)   # mean and sd in transformed units

    @property
    def mean(self) -> np.ndarray:
        return self.space.mean

    @property
    def sd(self) -> np.ndarray:
        return self.space.sd

    @property
    def clip(self) -> float:
        return self.space.clip

    @classmethod
    def fit(cls, X_raw_train: np.ndarray, clip: float = 5.0) -> "Preprocessor":
        flat = X_raw_train.reshape(-1, X_raw_train.shape[-1])
        if np.isnan(flat).all(axis=0).any():
            empty = [CHANNELS[i] for i in np.flatnonzero(np.isnan(flat).all(axis=0))]
            raise StayFormatError(f"channels never observed in the training split: {empty}")
        median = np.nanmedian(flat, axis=0)
        # fitted on the observed values before imputation (NaN left out), as the files have always been
        return cls(median=median.astype(np.float32), space=ModelSpace.fit(_transform(flat), clip=clip))

    def impute(self, X_raw: np.ndarray) -> np.ndarray:
        filled = forward_fill(X_raw)
        return np.where(np.isnan(filled), self.median, filled).astype(np.float32)

    def to_model(self, X_raw: np.ndarray) -> np.ndarray:
        return self.space.to_model(_transform(self.impute(X_raw)))

    def to_physical(self, X: np.ndarray) -> np.ndarray:
        return _inverse_transform(self.space.to_physical(X)).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"prep_median": self.median, **self.space.state(prefix="prep_")}

    @classmethod
    def from_state(cls, arrays) -> "Preprocessor":
        return cls(median=np.asarray(arrays["prep_median"]), space=ModelSpace.from_state(arrays, prefix="prep_"))


_LOG_MASK = np.array([c in LOG_CHANNELS for c in CHANNELS])


def _transform(x: np.ndarray) -> np.ndarray:
    out = np.array(x, dtype=np.float64)
    out[..., _LOG_MASK] = np.log1p(np.clip(out[..., _LOG_MASK], 0, None))
    return out


def _inverse_transform(x: np.ndarray) -> np.ndarray:
    out = np.array(x, dtype=np.float64)  # only the log channels go through expm1: no overflow elsewhere
    out[..., _LOG_MASK] = np.expm1(out[..., _LOG_MASK])
    return out


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation rows: `val_fraction` of each label value, chosen by `seed`."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        n_val = int(round(val_fraction * len(rows)))
        is_val[rng.choice(rows, size=n_val, replace=False)] = True
    return is_val


NPZ_EXPECTED = "an .npz with arrays X (N, T, F) and y (N,) of 0/1 labels, or a stays .npz"


def read_npz(path: str | os.PathLike, expected: str = NPZ_EXPECTED) -> dict[str, np.ndarray]:
    """Every array of an `.npz`, with a one-line error naming the file when it is missing, a `.npy`, empty or
    truncated, or holds Python objects (never unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise StayFormatError(f"{path}: no such file; expected {expected}")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError:  # a pickle: numpy's own message would suggest loading it unsafely
        raise StayFormatError(f"{path}: holds pickled Python objects, which are not read; expected {expected}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise StayFormatError(f"{path}: not a readable .npz ({error}); expected {expected}") from None
    if not hasattr(data, "files"):
        raise StayFormatError(f"{path}: a single array (.npy), not an .npz; expected {expected}")
    try:
        with data:
            return {key: data[key] for key in data.files}
    except ValueError:
        raise StayFormatError(f"{path}: an array holds Python objects (pickled), which are not read; expected "
                              f"{expected}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise StayFormatError(f"{path}: truncated or corrupt .npz ({error}); expected {expected}") from None


def long_stay_label(length_of_stay_days: np.ndarray) -> np.ndarray:
    """1 where the stay lasted more than LONG_STAY_DAYS, 0 where known and not, -1 where unknown."""
    los = np.asarray(length_of_stay_days, dtype=np.float64)
    return np.where(np.isnan(los) | (los < 0), -1, (los > LONG_STAY_DAYS).astype(int)).astype(np.int64)


def save_stays(path: str | os.PathLike, **arrays) -> Path:
    """Validate and write a stays `.npz` (REQUIRED_KEYS plus any extras such as `split`, `prep_*`)."""
    validate_stays(arrays, source=str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)  # atomic: a failed run leaves the previous good file intact
    return path


def load_stays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read and validate a stays `.npz`; errors name the file and the offending key."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"stays file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as error:  # zipfile/pickle errors: say which file
        raise StayFormatError(f"{path}: not a readable .npz file ({error})") from error
    validate_stays(arrays, source=str(path))
    return arrays


def validate_stays(arrays: dict, source: str = "<arrays>") -> None:
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise StayFormatError(f"{source}: missing keys {missing}; a stays file needs {list(REQUIRED_KEYS)}")
    X_raw, mask, X = arrays["X_raw"], arrays["mask"], arrays["X"]
    if X.ndim != 3:
        raise StayFormatError(f"{source}: X must be (N, T, F), got shape {X.shape}")
    n, t, f = X.shape
    for key in ("X_raw", "mask"):
        if arrays[key].shape != X.shape:
            raise StayFormatError(f"{source}: {key} has shape {arrays[key].shape}, X has {X.shape}")
    for key in ("record_id", "y_mortality", "y_long_stay"):
        if arrays[key].shape != (n,):
            raise StayFormatError(f"{source}: {key} must have shape ({n},), got {arrays[key].shape}")
    if len(arrays["channels"]) != f:
        raise StayFormatError(f"{source}: {f} features but {len(arrays['channels'])} channel names")
    if mask.dtype != np.bool_:
        raise StayFormatError(f"{source}: mask must be bool, got {mask.dtype}")
    if not np.isfinite(X).all():
        bad = np.flatnonzero(~np.isfinite(X).reshape(n, -1).all(axis=1))
        raise StayFormatError(f"{source}: X (model input) has NaN/inf in {len(bad)} stays, "
                              f"e.g. record_id {arrays['record_id'][bad[:3]].tolist()}")
    if np.any(mask & np.isnan(X_raw)):
        raise StayFormatError(f"{source}: mask marks NaN values of X_raw as observed")
    for key in ("y_mortality",):
        values = set(np.unique(arrays[key]).tolist())
        if not values <= {0, 1}:
            raise StayFormatError(f"{source}: {key} must be 0/1, found {sorted(values)}")
    if not set(np.unique(arrays["y_long_stay"]).tolist()) <= {-1, 0, 1}:
        raise StayFormatError(f"{source}: y_long_stay must be -1 (unknown), 0 or 1")
    ids = arrays["record_id"]
    if len(np.unique(ids)) != n:
        raise StayFormatError(f"{source}: duplicated record_id values, e.g. "
                              f"{pd.Series(ids)[pd.Series(ids).duplicated()].head(3).tolist()}")


def cohort_summary(arrays: dict, name: str = "") -> pd.DataFrame:
    """One row per channel: observed fraction and mean ± sd (physical units) by mortality label."""
    X_raw, mask, y = arrays["X_raw"], arrays["mask"], arrays["y_mortality"]
    channels = [str(c) for c in arrays["channels"]]
    rows = []
    for j, channel in enumerate(channels):
        row = {"dataset": name, "channel": channel, "unit": UNITS.get(channel, ""),
               "observed_fraction": float(mask[:, :, j].mean())}
        for label, tag in ((0, "survived"), (1, "died")):
            values = X_raw[y == label][:, :, j]
            values = values[~np.isnan(values)]
            row[f"mean_{tag}"] = float(values.mean()) if values.size else np.nan
            row[f"sd_{tag}"] = float(values.std()) if values.size else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def cohort_overview(arrays: dict, name: str = "") -> dict:
    """Stays, mortality and long-stay rates: the headline numbers of a cohort."""
    known = arrays["y_long_stay"] >= 0
    return {"dataset": name, "stays": int(len(arrays["y_mortality"])),
            "mortality_rate": float(np.mean(arrays["y_mortality"])),
            "long_stay_rate": float(np.mean(arrays["y_long_stay"][known])) if known.any() else np.nan,
            "long_stay_known": int(known.sum()),
            "observed_fraction": float(arrays["mask"].mean())}
