"""Extraction speed: `tardiff.data.extract` vs a straightforward pandas-per-file parser, same run.

    python benchmarks/bench_extract.py [--data-dir DIR] [--naive-stays 400]

Targets: all stays of set-a + set-b (8,000) in <= 10 s, and >= 6x faster than the naive parser.
The naive parser (pd.read_csv per tar member, then pivot) runs on the first `--naive-stays`
members of each archive and is extrapolated linearly to all stays; it is checked to give the
same hourly values as `extract` on those stays. Writes outputs/benchmarks/extract.json.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tardiff import data, stays

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS, TARGET_RATIO = 10.0, 6.0


def naive_stay(raw: bytes, hours: int = 24) -> tuple[int, np.ndarray]:
    """One stay the obvious way: read_csv, filter, pivot hourly means/sums, prefer invasive BP."""
    frame = pd.read_csv(io.BytesIO(raw))
    record_id = int(frame.loc[frame["Parameter"] == "RecordID", "Value"].iloc[0])
    hh_mm = frame["Time"].str.split(":", expand=True).astype(int)
    frame["hour"] = (hh_mm[0] * 60 + hh_mm[1]) // 60
    frame = frame[(frame["hour"] < hours) & frame["Parameter"].isin(list(data.PRIMARY) + list(data.FALLBACK))]
    channel = frame["Parameter"].map({**data.PRIMARY, **data.FALLBACK})
    low = channel.map({c: r[0] for c, r in stays.VALID_RANGES.items()})
    high = channel.map({c: r[1] for c, r in stays.VALID_RANGES.items()})
    frame = frame[(frame["Value"] >= low) & (frame["Value"] <= high)]
    out = np.full((hours, len(stays.CHANNELS)), np.nan, dtype=np.float32)
    if frame.empty:
        return record_id, out
    hourly = frame.groupby(["hour", "Parameter"])["Value"].agg(["mean", "sum"]).unstack("Parameter")
    means, sums = hourly["mean"], hourly["sum"]  # (hours seen, parameters seen): one pivot
    for name, ch in list(data.FALLBACK.items()) + list(data.PRIMARY.items()):  # primary overwrites
        table = sums if ch == "Urine" else means
        if name in table:
            column = table[name].dropna()
            out[column.index.to_numpy(), stays.CHANNELS.index(ch)] = column.to_numpy()
    return record_id, out


def naive_extract(archive: Path, limit: int) -> dict[int, np.ndarray]:
    result = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".txt"):
                record_id, values = naive_stay(tar.extractfile(member).read())
                result[record_id] = values
                if len(result) >= limit:
                    break
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--naive-stays", type=int, default=400, help="stays per archive for the naive parser")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "benchmarks" / "extract.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    try:
        data_dir, source = data.resolve_data_dir(args.data_dir), "physionet2012"
    except data.PhysioNetError as error:
        print(f"full data unavailable ({str(error).splitlines()[0]}); using the vendored 90-stay sample")
        data_dir, source = ROOT / "tests" / "fixtures" / "physionet2012", "fixture"
    sets = data.find_sets(data_dir)

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        paths = data.extract(data_dir, out, force=True)
        fast_s = time.perf_counter() - start
        arrays = {name: stays.load_stays(p) for name, p in paths.items()}
    n_stays = sum(len(a["record_id"]) for a in arrays.values())

    naive_s, naive_n = 0.0, 0
    for name, archive in sets.items():
        start = time.perf_counter()
        naive = naive_extract(archive, args.naive_stays)
        naive_s += time.perf_counter() - start
        naive_n += len(naive)
        index = {int(r): i for i, r in enumerate(arrays[name]["record_id"])}
        for record_id, values in naive.items():  # same numbers, or the comparison is meaningless
            np.testing.assert_allclose(arrays[name]["X_raw"][index[record_id]], values, rtol=1e-5,
                                       equal_nan=True, err_msg=f"{name} {record_id}")
    naive_total_s = naive_s / naive_n * n_stays
    ratio = naive_total_s / fast_s
    result = {
        "data": source, "stays": n_stays, "cpu_count": os.cpu_count(),
        "extract_s": round(fast_s, 3), "extract_stays_per_s": round(n_stays / fast_s, 1),
        "naive_stays_measured": naive_n, "naive_measured_s": round(naive_s, 3),
        "naive_stays_per_s": round(naive_n / naive_s, 1), "naive_extrapolated_s": round(naive_total_s, 3),
        "speedup": round(ratio, 2), "target_s": TARGET_SECONDS, "target_speedup": TARGET_RATIO,
        "meets_targets": bool(fast_s <= TARGET_SECONDS and ratio >= TARGET_RATIO),
    }
    print(f"extract: {n_stays} stays in {fast_s:.2f} s ({n_stays / fast_s:,.0f} stays/s, incl. checksums "
          f"and writing .npz)")
    print(f"naive pandas-per-file: {naive_n} stays in {naive_s:.2f} s ({naive_n / naive_s:,.0f} stays/s), "
          f"extrapolated to {n_stays}: {naive_total_s:.1f} s")
    print(f"speedup {ratio:.1f}x (target >= {TARGET_RATIO}x); time target <= {TARGET_SECONDS} s: "
          f"{'met' if result['meets_targets'] else 'NOT met'}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
