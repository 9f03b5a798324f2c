"""PhysioNet/CinC 2012 archives -> `OUT/set-X.npz` stays (the `tardiff.stays` format) + `OUT/manifest.json`.

Each archive is read in one pass: tar members as bytes, joined, parsed by one `pd.read_csv`
(Time and Parameter as categoricals), binned with one bincount. No per-file parsing, so the
8,000 stays of set-a + set-b take seconds. Nothing is lost silently: every dropped stay, row
or value has a reason, a count in the manifest and a logged warning.

Duplicated RecordIDs within a set (or across sets) are ambiguous: every copy is dropped
(reason `duplicate_record_id` / `record_id_in_earlier_set`) rather than guessing which is right.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import logging
import os
import re
import tarfile
import time
import urllib.request
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from tardiff import stays
from tardiff.utils import read_manifest, sha256_file, write_manifest

log = logging.getLogger(__name__)

BASE_URL = "https://physionet.org/files/challenge-2012/1.0.0/"
DOWNLOAD_FILES = ("set-a.tar.gz", "set-b.tar.gz", "Outcomes-a.txt", "Outcomes-b.txt")
TRAIN_SET = "set-a"  # train/val split and preprocessing are fitted here; every other set is test
EXTRACTOR_VERSION = 1  # bump when the output of the same inputs and config changes (invalidates caches)
HEADER = b"Time,Parameter,Value"

# PhysioNet parameter -> channel. Invasive BP is primary; non-invasive fills hours without it.
PRIMARY = {"HR": "HR", "SysABP": "SBP", "DiasABP": "DBP", "MAP": "MAP", "RespRate": "RR",
           "Temp": "Temp", "SaO2": "SaO2", "Urine": "Urine"}
FALLBACK = {"NISysABP": "SBP", "NIDiasABP": "DBP", "NIMAP": "MAP"}
_SOURCES = tuple(PRIMARY) + tuple(FALLBACK)  # slot -> parameter name
_SLOT_CHANNEL = np.array([stays.channel_index(c) for c in (*PRIMARY.values(), *FALLBACK.values())])
_N_PRIMARY = len(PRIMARY)
_SET_RE = re.compile(r"^set-([A-Za-z0-9]+)$")
_TIME_RE = re.compile(r"^(\d{1,3}):(\d{2})$")


class PhysioNetError(RuntimeError):
    """The PhysioNet 2012 input is missing, unreadable or unusable; the message says what to fix."""


# ---------------------------------------------------------------------------------------------
# Where the data is


def cache_dir() -> Path:
    return Path(os.environ.get("TARDIFF_CACHE_DIR") or Path.home() / ".cache" / "tardiff") / "physionet2012"


def download(url: str, dest: Path) -> None:
    """Fetch one file atomically (a `.part` file renamed on success)."""
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as handle:
        while block := response.read(1 << 20):
            handle.write(block)
    part.replace(dest)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """`data_dir`, else env TARDIFF_DATA_DIR, else the cache (downloading what it lacks from PhysioNet)."""
    data_dir = data_dir or os.environ.get("TARDIFF_DATA_DIR") or None
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise PhysioNetError(f"data directory {path} does not exist; it should hold "
                                 f"{', '.join(DOWNLOAD_FILES)} from {BASE_URL}")
        return path
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    failed = {}
    for name in DOWNLOAD_FILES:
        if (cache / name).exists():
            continue
        log.info("downloading %s%s -> %s", BASE_URL, name, cache)
        try:
            download(BASE_URL + name, cache / name)
        except (OSError, ValueError) as error:  # URLError, timeouts, refused connections are OSErrors
            failed[name] = f"{type(error).__name__}: {error}"
    if failed:
        raise PhysioNetError(
            f"could not download {', '.join(failed)} from {BASE_URL} ({next(iter(failed.values()))}).\n"
            f"Download these files by hand (open access, ODC-BY 1.0) and place them in {cache}:\n"
            + "".join(f"  {cache / name}\n" for name in DOWNLOAD_FILES)
            + "or put them in any folder and pass --data-dir FOLDER (or set TARDIFF_DATA_DIR=FOLDER).")
    return cache


MAX_OUTCOMES_WITHOUT_STAY = 0.01  # above this fraction (and 5 rows) of Outcomes rows without a stay: a bad archive


def find_sets(data_dir: Path) -> dict[str, Path]:
    """Set name -> `set-X.tar.gz` archive or extracted `set-X/` folder (the archive wins), set-a first."""
    found = {}
    for path in sorted(Path(data_dir).iterdir()):
        name = path.name[:-len(".tar.gz")] if path.name.endswith(".tar.gz") else path.name
        if not _SET_RE.match(name) or not (path.is_dir() or path.name.endswith(".tar.gz")):
            continue
        if name not in found or path.name.endswith(".tar.gz"):
            found[name] = path
    if not found:
        present = sorted(p.name for p in Path(data_dir).iterdir())
        raise PhysioNetError(
            f"no PhysioNet 2012 data in {data_dir}: looked for set-*.tar.gz archives or extracted set-*/ "
            f"folders, each with its Outcomes-*.txt (e.g. {', '.join(DOWNLOAD_FILES)} from {BASE_URL}); "
            f"found {present[:20] or 'an empty folder'}")
    if TRAIN_SET not in found:
        raise PhysioNetError(f"{data_dir} has {sorted(found)} but no {TRAIN_SET}.tar.gz (or {TRAIN_SET}/): "
                             f"the training split and the preprocessing are fitted on {TRAIN_SET}")
    return {name: found[name] for name in sorted(found, key=lambda n: (n != TRAIN_SET, n))}


def outcomes_path(data_dir: Path, set_name: str) -> Path:
    return Path(data_dir) / f"Outcomes-{_SET_RE.match(set_name).group(1)}.txt"


def input_checksum(path: Path) -> str:
    """sha256 of a file; for a folder, of its sorted file names and contents."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading


class Drops:
    """Per-reason counts and example identifiers of everything left out; each reason is logged once."""

    def __init__(self, set_name: str):
        self.set_name = set_name
        self.ids: dict[str, list] = defaultdict(list)
        self.counts: Counter = Counter()

    def add(self, reason: str, ids, what: str = "stays", count: int | None = None) -> None:
        """Record `count` (default: one per id) left out for `reason`; `ids` name files or records."""
        ids = [i.item() if isinstance(i, np.generic) else i for i in ids]
        if not ids:
            return
        count = len(ids) if count is None else int(count)
        self.counts[reason] += count
        self.ids[reason].extend(ids[:50 - len(self.ids[reason])])
        log.warning("%s: dropped %d %s (%s), e.g. %s", self.set_name, count, what, reason, ids[:10])

    def report(self) -> dict:
        return {reason: {"count": int(n), "examples": self.ids[reason]} for reason, n in self.counts.items()}


def read_members(source: Path) -> list[tuple[str, bytes]]:
    """(member name, bytes) of every `.txt` stay file in a tar.gz archive (streamed) or folder."""
    if source.is_dir():
        return [(str(p.relative_to(source.parent)), p.read_bytes()) for p in sorted(source.rglob("*.txt"))]
    members = []
    try:
        # The whole compressed stream first: tarfile stops quietly at the first bad header, so a flipped byte
        # would otherwise drop every later stay; gzip's CRC check over all of it catches that.
        with gzip.open(source, "rb") as stream:
            while stream.read(1 << 22):
                pass
        with tarfile.open(source, "r:gz") as archive:
            for member in archive:
                if member.isfile() and member.name.endswith(".txt"):
                    members.append((member.name, archive.extractfile(member).read()))
    except (tarfile.TarError, EOFError, zlib.error, OSError, gzip.BadGzipFile) as error:
        raise PhysioNetError(f"{source}: corrupt or truncated archive ({type(error).__name__}: {error}); "
                             f"download it again from {BASE_URL}{source.name}") from error
    return members


def _clean_lines(body: bytes) -> tuple[bytes, int]:
    """Keep only `a,b,c` lines (slow path, only for files whose comma count is off); returns dropped count."""
    lines = [line for line in body.split(b"\n") if line.strip()]
    good = [line for line in lines if line.count(b",") == 2]
    return b"".join(line + b"\n" for line in good), len(lines) - len(good)


def parse_members(members: list[tuple[str, bytes]], drops: Drops) -> tuple[list[str], pd.DataFrame]:
    """All stay files -> (file names, long frame with columns stay, minutes, parameter, value).

    One `read_csv` over the joined files; the stay index of each row comes from per-file line counts.
    """
    names, bodies, counts = [], [], []
    empty, bad_header, malformed = [], [], Counter()
    for name, raw in members:
        raw = raw.replace(b"\r", b"") if b"\r" in raw else raw
        raw = raw.removeprefix(b"\xef\xbb\xbf")  # UTF-8 byte order mark from some editors
        header, _, body = raw.partition(b"\n")
        if not raw.strip() or (header.strip() == HEADER and not body.strip()):
            empty.append(name)
            continue
        if header.strip() != HEADER:
            bad_header.append(name)
            continue
        if not body.endswith(b"\n"):
            body += b"\n"
        n_lines = body.count(b"\n")
        if body.count(b",") != 2 * n_lines or b"\n\n" in body:
            body, n_bad = _clean_lines(body)
            n_lines = body.count(b"\n")
            if n_bad:
                malformed[name] = n_bad
        names.append(name)
        bodies.append(body)
        counts.append(n_lines)
    drops.add("empty_file", empty, "files")
    drops.add("bad_header", bad_header, f"files (first line is not {HEADER.decode()!r})")
    if not names:
        return names, None
    try:
        frame = _read_rows(bodies)
    except pd.errors.ParserError:  # comma counts balanced out within a file: check every line
        for i, name in enumerate(names):
            bodies[i], n_bad = _clean_lines(bodies[i])
            counts[i] = bodies[i].count(b"\n")
            if n_bad:
                malformed[name] = n_bad
        frame = _read_rows(bodies)
    drops.add("malformed_line", [f"{n}: {k} lines" for n, k in malformed.items()],
              "lines that are not Time,Parameter,Value", count=sum(malformed.values()))
    stay = np.repeat(np.arange(len(names)), counts)
    if len(frame) != len(stay):  # cannot happen after _clean_lines; guard the alignment anyway
        raise PhysioNetError(f"internal: parsed {len(frame)} rows from {len(stay)} lines")
    value = frame["value"]
    if value.dtype.kind not in "fiu":  # a non-numeric entry somewhere: coerce, NaN marks it
        value = pd.to_numeric(value.astype(object), errors="coerce")
    value = value.to_numpy(np.float64)
    minutes_per_time = np.array([_minutes(t) for t in frame["time"].cat.categories] + [np.nan])
    minutes = minutes_per_time[frame["time"].cat.codes.to_numpy()]  # code -1 (missing) -> NaN
    return names, pd.DataFrame({"stay": stay, "minutes": minutes, "parameter": frame["parameter"],
                                "value": value})


def _read_rows(bodies: list[bytes]) -> pd.DataFrame:
    """One C-parser pass over all files; quoting off so a stray quote cannot swallow lines."""
    if not any(bodies):
        return pd.DataFrame({"time": pd.Categorical([]), "parameter": pd.Categorical([]), "value": []})
    return pd.read_csv(io.BytesIO(b"".join(bodies)), header=None, names=["time", "parameter", "value"],
                       dtype={"time": "category", "parameter": "category"}, skip_blank_lines=False,
                       keep_default_na=False, na_values=[""], quoting=csv.QUOTE_NONE,
                       encoding_errors="replace", engine="c")


def _minutes(hhmm: str) -> float:
    """hh:mm -> minutes; NaN (dropped and counted as bad_time) for anything else, a minute field of 60 or more
    included (it would otherwise be read silently as the next hour)."""
    match = _TIME_RE.match(str(hhmm).strip())
    if not match or int(match.group(2)) >= 60:
        return np.nan
    return float(int(match.group(1)) * 60 + int(match.group(2)))


def check_outcomes_file(path: Path) -> None:
    """A one-line error when a set's Outcomes-X.txt is missing or is not a file."""
    if not path.exists():
        raise PhysioNetError(f"missing outcomes file {path}: every set-X needs its Outcomes-X.txt beside it "
                             f"(download {BASE_URL}{path.name})")
    if not path.is_file():
        raise PhysioNetError(f"{path} is a folder, not the outcomes table: put the file {path.name} there "
                             f"(download {BASE_URL}{path.name})")


def read_outcomes(path: Path) -> pd.DataFrame:
    """Outcomes-X.txt -> numeric RecordID, Length_of_stay, In-hospital_death (NaN where unreadable)."""
    check_outcomes_file(path)
    try:
        outcomes = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise PhysioNetError(f"{path}: not a readable outcomes table ({error})") from error
    outcomes.columns = [str(c).strip() for c in outcomes.columns]
    needed = ["RecordID", "Length_of_stay", "In-hospital_death"]
    if missing := [c for c in needed if c not in outcomes.columns]:
        raise PhysioNetError(f"{path}: missing columns {missing}; expected the PhysioNet header "
                             f"RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death")
    for column in needed:
        outcomes[column] = pd.to_numeric(outcomes[column], errors="coerce")
    return outcomes[needed]


# ---------------------------------------------------------------------------------------------
# One set


def extract_set(source: Path, outcomes_file: Path, hours: int = 24,
                seen_ids: set | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """One archive/folder + its outcomes -> stays arrays (no X yet) and its manifest report."""
    set_name = source.name.removesuffix(".tar.gz")
    drops = Drops(set_name)
    outcomes = read_outcomes(outcomes_file)
    members = read_members(source)
    if not members:
        raise PhysioNetError(f"{source}: no .txt stay files inside (expected {set_name}/<RecordID>.txt)")
    names, rows = parse_members(members, drops)
    if not names:
        raise PhysioNetError(f"{source}: nothing usable: none of its {len(members)} files is a stay "
                             f"(dropped: {dict(drops.counts)})")
    categories = list(rows["parameter"].cat.categories)
    codes = rows["parameter"].cat.codes.to_numpy()  # -1 where the parameter is missing
    value, minutes, stay = rows["value"].to_numpy(), rows["minutes"].to_numpy(), rows["stay"].to_numpy()

    # Rows whose value is not a number or whose time is not hh:mm: dropped, counted per parameter.
    per_parameter = {}
    for reason, bad in (("non_numeric_value", np.isnan(value)), ("bad_time", np.isnan(minutes))):
        codes_bad, n_bad = np.unique(codes[bad], return_counts=True)
        per_parameter[reason] = {(categories[c] if c >= 0 else "<missing>"): int(n)
                                 for c, n in zip(codes_bad, n_bad)}
        drops.add(reason, sorted({names[i] for i in stay[bad]}),
                  f"rows in files ({per_parameter[reason]})", count=int(bad.sum()))

    is_id = (codes == categories.index("RecordID")) if "RecordID" in categories else np.zeros_like(stay, bool)
    record_id = _record_ids(names, stay[is_id], value[is_id], drops)
    keep = _unique_ids(record_id, names, seen_ids or set(), drops)
    table, keep, unmatched = _match_outcomes(record_id, keep, outcomes, outcomes_file.name, drops)
    kept = np.flatnonzero(keep)
    if not len(kept):
        raise PhysioNetError(f"{source}: nothing usable: {len(members)} files, none kept "
                             f"(dropped: {dict(drops.counts)})")
    new_index = np.full(len(names), -1)
    new_index[kept] = np.arange(len(kept))
    X_raw, out_of_range, row_counts = _hourly(new_index[stay], codes, categories, minutes, value, len(kept), hours)
    if row_counts["rows_with_padded_or_quoted_channel_name"]:
        log.warning("%s: %d rows name a channel with quotes or padding and were not used",
                    set_name, row_counts["rows_with_padded_or_quoted_channel_name"])

    rid = record_id[kept]
    arrays = {
        "X_raw": X_raw,
        "mask": ~np.isnan(X_raw),
        "record_id": rid,
        "y_mortality": table.loc[rid, "In-hospital_death"].to_numpy().astype(np.int64),
        "y_long_stay": stays.long_stay_label(table.loc[rid, "Length_of_stay"].to_numpy(np.float64)),
        "channels": np.array(stays.CHANNELS, dtype=str),
    }
    if out_of_range:
        log.warning("%s: %d values outside stays.VALID_RANGES (or -1) treated as missing: %s",
                    set_name, sum(out_of_range.values()), out_of_range)
    report = {
        "source": source.name, "outcomes": outcomes_file.name,
        "files": len(members), "stays": len(kept),
        "mortality_rate": round(float(arrays["y_mortality"].mean()), 6),
        "long_stay_unknown": int((arrays["y_long_stay"] < 0).sum()),
        "stays_without_observation": int((~arrays["mask"].any(axis=(1, 2))).sum()),
        "outcomes_without_stay": {"count": len(unmatched), "examples": unmatched[:50]},
        **row_counts,
        "outcome_rows_without_record_id": int(outcomes["RecordID"].isna().sum()),
        "drops": drops.report(),
        "out_of_range": out_of_range,
        "non_numeric": per_parameter["non_numeric_value"],
        "bad_time": per_parameter["bad_time"],
    }
    return arrays, report


def _record_ids(names: list[str], id_stay: np.ndarray, id_value: np.ndarray, drops: Drops) -> np.ndarray:
    """(stays,) the first RecordID row of each stay, else its file name if numeric, else -1 (dropped)."""
    record_id = np.full(len(names), -1, dtype=np.int64)
    ok = np.isfinite(id_value)
    first_stay, first_row = np.unique(id_stay[ok], return_index=True)
    record_id[first_stay] = id_value[ok][first_row].astype(np.int64)
    no_id = []
    for i in np.flatnonzero(record_id < 0):
        stem = Path(names[i]).stem
        if stem.isdigit():
            record_id[i] = int(stem)
        else:
            no_id.append(names[i])
    drops.add("no_record_id", no_id, "files (no RecordID row, file name not a number)")
    return record_id


def _unique_ids(record_id: np.ndarray, names: list[str], seen_ids: set, drops: Drops) -> np.ndarray:
    """(stays,) keep mask: a RecordID shared within the set drops every copy, one from an earlier set too."""
    keep = record_id >= 0
    ids, n_copies = np.unique(record_id[keep], return_counts=True)
    dup = np.isin(record_id, ids[n_copies > 1]) & keep
    drops.add("duplicate_record_id", [f"{record_id[i]} ({names[i]})" for i in np.flatnonzero(dup)],
              "stays sharing a RecordID (every copy dropped)")
    earlier = keep & ~dup & np.isin(record_id, list(seen_ids))
    drops.add("record_id_in_earlier_set", record_id[earlier].tolist(),
              "stays whose RecordID is in an earlier set (would leak between train and test)")
    return keep & ~dup & ~earlier


def _match_outcomes(record_id: np.ndarray, keep: np.ndarray, outcomes: pd.DataFrame, file_name: str,
                    drops: Drops) -> tuple[pd.DataFrame, np.ndarray, list[int]]:
    """Outcome table indexed by RecordID, the stays still kept, and outcome RecordIDs without a stay."""
    ids = outcomes["RecordID"]
    known_ids = ids.dropna().astype(np.int64)
    several = set(known_ids[known_ids.duplicated()].tolist())
    valid = ids.notna() & outcomes["In-hospital_death"].isin([0, 1]) & ~ids.isin(several)
    bad_label = set(ids[ids.notna() & ~outcomes["In-hospital_death"].isin([0, 1])].astype(np.int64))
    table = outcomes[valid].set_index(ids[valid].astype(np.int64))
    for reason, rejected, what in (("duplicate_outcome", several, f"stays with several rows in {file_name}"),
                                   ("bad_outcome", bad_label, f"stays whose In-hospital_death in {file_name} "
                                                              f"is not 0/1")):
        hit = keep & np.isin(record_id, list(rejected))
        drops.add(reason, record_id[hit].tolist(), what)
        keep = keep & ~hit
    no_outcome = keep & ~np.isin(record_id, table.index.to_numpy())
    drops.add("no_outcome", record_id[no_outcome].tolist(), f"stays without a row in {file_name}")
    unmatched = sorted(set(known_ids.tolist()) - set(record_id[record_id >= 0].tolist()))
    if len(unmatched) > max(5, MAX_OUTCOMES_WITHOUT_STAY * len(known_ids)):
        raise PhysioNetError(f"{len(unmatched)} of {len(known_ids)} rows of {file_name} have no stay file "
                             f"(e.g. RecordID {unmatched[:5]}): the stays archive is incomplete or does not "
                             f"belong to {file_name}; download both again from {BASE_URL}")
    if unmatched:
        log.warning("%d rows of %s have no stay file, e.g. RecordID %s", len(unmatched), file_name,
                    unmatched[:10])
    return table, keep & ~no_outcome, unmatched


def _hourly(stay: np.ndarray, codes: np.ndarray, categories: list[str], minutes: np.ndarray,
            value: np.ndarray, n_stays: int, hours: int) -> tuple[np.ndarray, dict[str, int]]:
    """Rows -> (n_stays, hours, F) X_raw and per-parameter counts of values outside VALID_RANGES.

    `stay` is -1 for dropped stays. Rows go to slots: primary channels 0..7, non-invasive BP 8..10,
    binned separately and merged per hour with `stays.prefer`.
    """
    slot_of_code = np.array([_SOURCES.index(c) if c in _SOURCES else -1 for c in categories] + [-1])
    slot = slot_of_code[codes]
    used = (slot >= 0) & (stay >= 0) & ~np.isnan(value) & ~np.isnan(minutes)
    rows = used & (minutes < hours * 60)
    # Not errors, but counted: channel rows recorded after the window, and names that are a channel's once
    # quotes and spaces are stripped (a reformatted file) but so do not match.
    counts = {"rows_after_window": int((used & (minutes >= hours * 60)).sum())}
    near = np.array([c not in _SOURCES and str(c).strip().strip('"\'').strip() in _SOURCES for c in categories]
                    + [False])
    counts["rows_with_padded_or_quoted_channel_name"] = int(near[codes].sum())
    slot, value, stay, hour = slot[rows], value[rows], stay[rows], (minutes[rows] // 60).astype(np.int64)
    invalid = stays.out_of_range(value, _SLOT_CHANNEL[slot])  # -1 "not measured" included
    out_of_range = {_SOURCES[s]: int(n) for s, n in zip(*np.unique(slot[invalid], return_counts=True))}
    slot, value, stay, hour = slot[~invalid], value[~invalid], stay[~invalid], hour[~invalid]
    primary = slot < _N_PRIMARY
    binned = [stays.bin_hourly(stay[m], hour[m], _SLOT_CHANNEL[slot[m]], value[m], n_stays, hours)
              for m in (primary, ~primary)]
    return stays.prefer(*binned).astype(np.float32), out_of_range, counts  # fallback: NaN outside BP


# ---------------------------------------------------------------------------------------------
# All sets


def extract(data_dir: str | os.PathLike | None, out_dir: str | os.PathLike, hours: int = 24,
            val_fraction: float = 0.1, seed: int = 0, force: bool = False) -> dict[str, Path]:
    """Every set in `data_dir` -> `out_dir/set-X.npz`; reuses the output of unchanged inputs and config."""
    start = time.perf_counter()
    if not 0 < hours <= 48:
        raise ValueError(f"hours must be in 1..48 (PhysioNet 2012 records cover 48 hours), got {hours}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    data_dir, out_dir = resolve_data_dir(data_dir), Path(out_dir)
    sets = find_sets(data_dir)
    for name in sets:
        check_outcomes_file(outcomes_path(data_dir, name))
    config = {"extractor_version": EXTRACTOR_VERSION, "hours": int(hours),
              "val_fraction": float(val_fraction), "seed": int(seed)}
    inputs = {}
    for name, path in sets.items():
        inputs[path.name] = input_checksum(path)
        inputs[outcomes_path(data_dir, name).name] = sha256_file(outcomes_path(data_dir, name))
    outputs = {name: out_dir / f"{name}.npz" for name in sets}
    _check_output_dir(out_dir, outputs)
    previous = read_manifest(out_dir / "manifest.json")
    if (not force and previous and previous.get("config") == config and previous.get("inputs") == inputs
            and previous.get("output_checksums") == _checksums(outputs)):
        log.info("reusing %s (same inputs, config and output checksums; --force to redo)", out_dir)
        return outputs

    (out_dir / "manifest.json").unlink(missing_ok=True)  # the manifest marks a complete, matching output
    arrays, reports, seen = {}, {}, set()
    for name, path in sets.items():
        arrays[name], reports[name] = extract_set(path, outcomes_path(data_dir, name), hours, seen)
        seen.update(arrays[name]["record_id"].tolist())

    train_set = arrays[TRAIN_SET]
    is_val = stays.stratified_split(train_set["y_mortality"], val_fraction, seed)
    y_val = train_set["y_mortality"][is_val]
    if len(np.unique(y_val)) < 2 or (~is_val).sum() == 0:
        raise PhysioNetError(f"--val-fraction {val_fraction} gives {int(is_val.sum())} validation stays "
                             f"({int((y_val == 1).sum())} deaths) of {TRAIN_SET}'s {len(is_val)}: model selection "
                             f"needs both outcomes there and training stays left; use e.g. 0.1")
    for name, arr in arrays.items():
        arr["split"] = (np.where(is_val, "val", "train") if name == TRAIN_SET
                        else np.full(len(arr["record_id"]), "test")).astype("<U5")
    preprocessor = stays.Preprocessor.fit(train_set["X_raw"][~is_val])
    for name, arr in arrays.items():
        arr["X"] = preprocessor.to_model(arr["X_raw"])
        arr.update(preprocessor.state())
        stays.save_stays(outputs[name], **arr)
        reports[name]["splits"] = {s: int(n) for s, n in zip(*np.unique(arr["split"], return_counts=True))}
    write_manifest(out_dir / "manifest.json", config=config, seed=seed, inputs=inputs,
                   wall_time_s=time.perf_counter() - start, data_dir=str(data_dir),
                   outputs={name: path.name for name, path in outputs.items()},
                   counts={name: r["stays"] for name, r in reports.items()},
                   drops={name: r["drops"] for name, r in reports.items()},
                   out_of_range={name: r["out_of_range"] for name, r in reports.items()},
                   sets=reports, output_checksums=_checksums(outputs))
    log.info("wrote %s in %.1f s", ", ".join(str(p) for p in outputs.values()), time.perf_counter() - start)
    return outputs


def _checksums(outputs: dict[str, Path]) -> dict[str, str | None]:
    """sha256 of each output (None when missing): reuse only what is byte-for-byte what was written."""
    return {name: sha256_file(path) if path.is_file() else None for name, path in outputs.items()}


def _check_output_dir(out_dir: Path, outputs: dict[str, Path]) -> None:
    """Fail before any work when the outputs cannot be written (a file in the way, a read-only folder)."""
    for parent in (out_dir, *out_dir.parents):
        if parent.exists():
            if not parent.is_dir():
                raise PhysioNetError(f"--out {out_dir}: {parent} is a file, not a folder")
            break
    for path in outputs.values():
        if path.is_dir():
            raise PhysioNetError(f"--out {out_dir}: {path} is a folder; remove it or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise PhysioNetError(f"--out {out_dir}: the folder is not writable")


# ---------------------------------------------------------------------------------------------
# Command line (`python -m tardiff extract`)


def add_extract_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="folder with set-*.tar.gz (or set-*/) and Outcomes-*.txt; default: env "
                             "TARDIFF_DATA_DIR, else download into ~/.cache/tardiff (TARDIFF_CACHE_DIR)")
    parser.add_argument("--out", default="outputs/data", help="output folder (default: outputs/data)")
    parser.add_argument("--hours", type=int, default=24, help="hours since admission to keep (default 24)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="stratified validation fraction of set-a (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split (default 0)")
    parser.add_argument("--force", action="store_true", help="redo even when a cached result matches")


def extract_main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        written = extract(args.data_dir, args.out, hours=args.hours, val_fraction=args.val_fraction,
                          seed=args.seed, force=args.force)
    except (PhysioNetError, ValueError) as error:
        log.error("%s", error)
        return 1
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0
