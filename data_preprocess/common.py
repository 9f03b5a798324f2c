"""Shared steps of the MIMIC-III and eICU extractors: find and stream tables, bin, split, save.

Both extractors only decide which rows are which channel at which hour; everything
after that (hourly binning, invasive-over-non-invasive preference, range checks,
train-only preprocessing, the `.npz` + manifest) is here, so the two cannot drift apart.
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from tardiff import stays
from tardiff.utils import sha256_file, write_manifest

SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
DEFAULT_CHUNKSIZE = 1_000_000


class MissingTableError(FileNotFoundError):
    """A table the extractor needs is not in the data directory."""


def find_table(data_dir: str | os.PathLike, name: str, dataset: str, required: bool = True) -> Path | None:
    """`NAME.csv` or `NAME.csv.gz` in `data_dir`, file name matched case-insensitively.

    Both present: the plain CSV is read, and the choice is said, when the gzip's recorded uncompressed size
    matches the CSV's; they are refused when it does not (two different exports of one table).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingTableError(f"{dataset} data directory not found: {data_dir}")
    found = {path.name.lower().endswith(".gz"): path for path in sorted(data_dir.iterdir())
             if path.name.lower() in (f"{name}.csv".lower(), f"{name}.csv.gz".lower())}
    if len(found) == 2:
        plain, packed = found[False], found[True]
        if packed.is_file() and plain.is_file() and _gzip_size(packed) != plain.stat().st_size % 2 ** 32:
            raise ValueError(f"{dataset} table {name} is in {data_dir} twice, as {plain.name} and {packed.name}, and "
                             "they differ (uncompressed sizes); remove the one you do not mean")
        warnings.warn(f"{dataset} table {name}: both {plain.name} and {packed.name} are in {data_dir} (same size "
                      f"uncompressed); reading {plain.name}")
        return plain
    if found:
        return next(iter(found.values()))
    if required:
        raise MissingTableError(f"{dataset} table {name} not found in {data_dir}: expected "
                                f"{name}.csv or {name}.csv.gz (the {dataset} CSV export)")
    return None


def _gzip_size(path: Path) -> int:
    """The uncompressed size modulo 2**32 a gzip file records in its last four bytes (ISIZE, RFC 1952)."""
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        return int.from_bytes(handle.read(4), "little")


def read_chunks(path: Path, columns: list[str], chunksize: int,
                dtype: dict[str, str] | None = None, counts: dict | None = None) -> Iterator[pd.DataFrame]:
    """Stream `columns` of a CSV(.gz) in chunks, headers matched case-insensitively, renamed to lower case.

    With `counts`, a cell of a typed column that is not a number does not stop the read: from the chunk
    where one appears on, typed columns are parsed leniently, the row is dropped and counted in
    `counts["rows_not_a_number"][column]` (the fast typed parser serves the rest). Without it, the
    error names the file, the typed columns and the rows read so far.
    """
    if chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, got {chunksize}")
    try:
        header = pd.read_csv(path, nrows=0).columns
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the table is empty (not even a header row); export it again") from None
    except (EOFError, OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot be read ({type(error).__name__}: {error}); a truncated or corrupt "
                         f"download? export it again") from None
    actual = {c.lower(): c for c in header}
    missing = [c for c in columns if c not in actual]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (found {list(header)})")
    usecols = [actual[c] for c in columns]
    dtype = {actual[c]: t for c, t in (dtype or {}).items()}
    rename = {actual[c]: c for c in columns}
    rows = 0
    try:
        for chunk in pd.read_csv(path, usecols=usecols, dtype=dtype, chunksize=chunksize):
            rows += len(chunk)
            yield chunk.rename(columns=rename)
        return
    except (ValueError, EOFError, OSError, pd.errors.ParserError) as error:
        # pandas names neither the file nor, for a bad number, the column: say both and where
        typed = ", ".join(f"{c} ({t})" for c, t in (dtype or {}).items())
        failure = ValueError(f"{path}: unreadable after {rows} data rows ({type(error).__name__}: {error}); "
                             f"typed columns: {typed or 'none'}")
        if counts is None or not dtype or not isinstance(error, ValueError) or isinstance(error, pd.errors.ParserError):
            raise failure from None
    bad_cells = counts.setdefault("rows_not_a_number", {})
    try:
        for chunk in pd.read_csv(path, usecols=usecols, dtype={c: "string" for c in dtype}, chunksize=chunksize,
                                 skiprows=range(1, rows + 1)):
            keep = np.ones(len(chunk), dtype=bool)
            for column, kind in dtype.items():
                text = chunk[column]
                number = pd.to_numeric(text, errors="coerce")
                bad = (number.isna() & text.notna() & (text.str.strip() != "")).to_numpy()
                if kind.startswith("int"):
                    bad |= number.isna().to_numpy()
                if bad.any():
                    bad_cells[rename[column]] = bad_cells.get(rename[column], 0) + int(bad.sum())
                keep &= ~bad
                chunk[column] = number
            chunk = chunk[keep].astype({c: t for c, t in dtype.items()})
            yield chunk.rename(columns=rename)
    except (EOFError, OSError, pd.errors.ParserError) as error:
        raise ValueError(f"{path}: unreadable ({type(error).__name__}: {error})") from None


def read_table(path: Path, columns: list[str], dtype: dict[str, str] | None = None) -> pd.DataFrame:
    """A small table (stays, admissions) read whole, with lower-case column names."""
    return pd.concat(list(read_chunks(path, columns, chunksize=10**7, dtype=dtype)), ignore_index=True)


def check_cohort(cohort: pd.DataFrame, table: Path, id_column: str, excluded: dict, label: str) -> pd.DataFrame:
    """A stay table must name each stay once and leave some stays: a clear error naming the table otherwise."""
    ids = cohort[id_column]
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise ValueError(f"{Path(table).name}: {id_column} {int(duplicated.iloc[0])} appears more than once "
                         f"({duplicated.nunique()} ids repeated); each stay must be one row")
    if cohort.empty:
        raise ValueError(f"{Path(table).name}: no stay left to extract; excluded {excluded} (the {label} must be "
                         f"known, times parseable and the stay long enough)")
    return cohort


def to_ns(times: pd.Series) -> np.ndarray:
    """Timestamps as int64 nanoseconds; unparseable or empty -> NaT sentinel (np.iinfo(int64).min)."""
    parsed = pd.to_datetime(times, format="ISO8601", errors="coerce")
    return np.asarray(parsed, dtype="datetime64[ns]").view(np.int64)


NAT = np.iinfo(np.int64).min
NS_PER_HOUR = 3_600 * 10**9


class HourlyCollector:
    """Accumulates long-format (stay, hour, channel, value) rows chunk by chunk, then bins them.

    Rows from a fallback source (non-invasive BP, pulse oximetry) are binned separately and
    used only in hours without a primary value (`stays.prefer`).
    """

    def __init__(self, n_stays: int, hours: int):
        self.n_stays, self.hours = n_stays, hours
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.out_of_range = {c: 0 for c in stays.CHANNELS}
        self.rows_kept = 0

    def add(self, stay_idx: np.ndarray, hour: np.ndarray, channel_idx: np.ndarray, values: np.ndarray,
            fallback: np.ndarray | bool = False, signs: np.ndarray | None = None) -> None:
        """Add rows of known stays; rows outside [0, hours) are ignored, values outside VALID_RANGES counted and dropped.

        `signs` (+1/-1) is applied after the range check: a volume charted as going in
        (GU irrigant) is a valid volume that counts negative in the hourly net urine output.
        """
        n = len(values)
        fallback = np.broadcast_to(np.asarray(fallback, dtype=bool), (n,))
        values = np.asarray(values, dtype=np.float64)
        keep = (stay_idx >= 0) & (hour >= 0) & (hour < self.hours) & ~np.isnan(values)
        bad = keep & stays.out_of_range(values, channel_idx)
        for j, count in enumerate(np.bincount(channel_idx[bad], minlength=len(stays.CHANNELS))):
            self.out_of_range[stays.CHANNELS[j]] += int(count)
        keep &= ~bad
        if signs is not None:
            values = values * signs
        self.rows_kept += int(keep.sum())
        # Compact dtypes: the first day of every full-MIMIC stay is ~10^7 rows kept until binning.
        self.parts.append((stay_idx[keep].astype(np.int32), hour[keep].astype(np.int16),
                           channel_idx[keep].astype(np.int8), values[keep].astype(np.float32), fallback[keep]))

    def to_hourly(self) -> np.ndarray:
        """(n_stays, hours, F) physical units, NaN where unobserved; hourly sums out of range also dropped."""
        cols = [np.concatenate([p[i] for p in self.parts]) if self.parts else np.zeros(0)
                for i in range(5)]
        stay_idx, hour, channel_idx, values, fallback = cols
        fallback = fallback.astype(bool)
        binned = [stays.bin_hourly(stay_idx[sel].astype(np.int64), hour[sel].astype(np.int64),
                                   channel_idx[sel].astype(np.int64), values[sel], self.n_stays, self.hours)
                  for sel in (~fallback, fallback)]
        X_raw = stays.prefer(*binned)  # (N, T, F)
        # Per-row checks keep means in range; a sum (urine) can still leave it (e.g. net irrigant).
        channel_of = np.broadcast_to(np.arange(len(stays.CHANNELS)), X_raw.shape)
        bad = ~np.isnan(X_raw) & stays.out_of_range(X_raw, channel_of)
        for j, count in enumerate(bad.sum(axis=(0, 1))):
            self.out_of_range[stays.CHANNELS[j]] += int(count)
        X_raw[bad] = np.nan
        return X_raw.astype(np.float32)


def split_labels(y: np.ndarray, seed: int) -> np.ndarray:
    """'train'/'val'/'test' per stay, stratified on `y`, in SPLIT_FRACTIONS proportions (70/10/20)."""
    split = np.full(len(y), "train", dtype="<U5")
    is_test = stays.stratified_split(y, SPLIT_FRACTIONS["test"], seed)
    split[is_test] = "test"
    rest = np.flatnonzero(~is_test)
    val_share = SPLIT_FRACTIONS["val"] / (1.0 - SPLIT_FRACTIONS["test"])
    split[rest[stays.stratified_split(y[rest], val_share, seed + 1)]] = "val"
    return split


def fit_preprocessor(X_raw_train: np.ndarray) -> tuple[stays.Preprocessor, list[str]]:
    """`Preprocessor.fit` that tolerates channels never observed in training (e.g. eICU without vitalPeriodic).

    Such a channel gets median 0, mean 0, sd 1, so it is 0 everywhere in model space;
    the names are returned for the manifest.
    """
    unobserved = np.isnan(X_raw_train).all(axis=(0, 1))
    X_fit = X_raw_train.copy()
    X_fit[..., unobserved] = 0.0  # constant 0 -> median 0, mean transform(0)=0, sd fallback 1
    prep = stays.Preprocessor.fit(X_fit)
    return prep, [stays.CHANNELS[j] for j in np.flatnonzero(unobserved)]


def finish(*, name: str, X_raw: np.ndarray, record_id: np.ndarray, y_mortality: np.ndarray,
           hospital_los_days: np.ndarray, out: str | os.PathLike, seed: int, config: dict,
           inputs: list[Path], counts: dict, excluded: dict, out_of_range: dict, started: float,
           quiet: bool = False) -> tuple[dict, dict]:
    """Split, fit the train-only preprocessor, write the stays `.npz` and its manifest, print the summary."""
    if len(record_id) == 0:
        raise ValueError(f"{name}: no stays left after the exclusions {counts}; check the input tables")
    y_mortality = np.asarray(y_mortality, dtype=np.int64)
    split = split_labels(y_mortality, seed)
    prep, unobserved = fit_preprocessor(X_raw[split == "train"])
    if unobserved:
        warnings.warn(f"{name}: channels {unobserved} never observed in the training split; "
                      "they are set to 0 in model space (median 0, mean 0, sd 1)", stacklevel=3)
    arrays = {
        "X_raw": X_raw.astype(np.float32),
        "mask": ~np.isnan(X_raw),
        "X": prep.to_model(X_raw),
        "record_id": np.asarray(record_id, dtype=np.int64),
        "y_mortality": y_mortality,
        "y_long_stay": stays.long_stay_label(hospital_los_days),
        "channels": np.array(stays.CHANNELS),
        "split": split,
        **prep.state(),
    }
    out = stays.save_stays(out, **arrays)
    manifest = write_manifest(
        out.with_suffix(".json"), config=config, seed=seed,
        inputs={p.name: sha256_file(p) for p in inputs},
        wall_time_s=time.perf_counter() - started,
        dataset=name, output=str(out),
        counts={**counts, "stays": int(len(record_id)),
                **{f"split_{s}": int((split == s).sum()) for s in SPLIT_FRACTIONS}},
        excluded_stays=excluded,
        out_of_range=out_of_range,
        unobserved_channels=unobserved,
        unobserved_channel_fallback={"median": 0.0, "mean": 0.0, "sd": 1.0} if unobserved else None,
        split_fractions=SPLIT_FRACTIONS,
    )
    if not quiet:
        print_summary(arrays, name, out)
    return arrays, manifest


def print_summary(arrays: dict, name: str, out: Path) -> None:
    """The cohort overview and per-channel table notebook 01 shows for PhysioNet 2012."""
    print(f"wrote {out} and {out.with_suffix('.json').name}")
    overview = stays.cohort_overview(arrays, name)
    print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in overview.items()))
    print(stays.cohort_summary(arrays, name).to_string(index=False, float_format=lambda v: f"{v:.2f}"))


def check_options(out, hours: int, chunksize: int) -> None:
    """Before any reading: an output the extractor can write, and options within their meaning."""
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"--out {out}: name an .npz file")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; name an .npz file")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {out}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise ValueError(f"--out {out}: {parent} is not writable")
            break
    if not 1 <= hours <= 24 * 30:
        raise ValueError(f"--hours must be between 1 and 720, got {hours}")
    if chunksize < 1:
        raise ValueError(f"--chunksize must be >= 1, got {chunksize}")


def run_cli(argv, *, prog: str, description: str, database: str, extract) -> None:
    """The extractors' shared command line: --data-dir, --out, --hours, --seed, --chunksize."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--data-dir", required=True, help=f"folder holding the {database} CSV(.gz) tables")
    parser.add_argument("--out", required=True, help="output .npz (a .json manifest is written beside it)")
    parser.add_argument("--hours", type=int, default=24, help="hours per sample; shorter stays are excluded")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 70/10/20 split")
    parser.add_argument("--chunksize", type=int, default=DEFAULT_CHUNKSIZE, help="CSV rows per chunk")
    args = parser.parse_args(argv)
    try:
        check_options(args.out, args.hours, args.chunksize)
        extract(args.data_dir, args.out, hours=args.hours, seed=args.seed, chunksize=args.chunksize)
    except (ValueError, KeyError, IndexError, FileNotFoundError, stays.StayFormatError) as error:
        # one line naming the table and the problem, not a traceback
        raise SystemExit(f"{prog}: error: {error}") from None
