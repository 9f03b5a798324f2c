"""MIMIC-III extractor throughput on the demo: CHARTEVENTS rows/s and the projected time for the full table.

The ratio to a plain `pd.read_csv` of the same columns, measured in the same run, says how
much the filtering and binning add on top of reading the file, independent of the machine.

    python benchmarks/bench_mimic3.py [--data-dir DIR] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
from data_preprocess import mimic3  # noqa: E402
from data_preprocess.common import find_table  # noqa: E402
from tardiff.utils import write_manifest  # noqa: E402

FULL_CHARTEVENTS_ROWS = 330_712_483  # MIMIC-III v1.4 CHARTEVENTS


def resolve_data_dir(arg: str | None) -> Path | None:
    root = arg or os.environ.get("TARDIFF_DEMO_DIR")
    if not root:
        return None
    root = Path(root)
    return root / "mimic3-demo" if (root / "mimic3-demo").is_dir() else root


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="MIMIC-III CSV folder (default: $TARDIFF_DEMO_DIR/mimic3-demo)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the fastest counts")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "benchmarks" / "mimic3.json"))
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)
    if data_dir is None:  # `make bench` without the demo: say so, do not fail the other benchmarks
        print("bench_mimic3: skipped, give --data-dir (MIMIC-III CSV folder) or set TARDIFF_DEMO_DIR "
              "(folder holding mimic3-demo/)")
        return {}
    chartevents = find_table(data_dir, "CHARTEVENTS", "MIMIC-III")

    plain, total, stage = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            tic = time.perf_counter()
            header = {c.lower(): c for c in pd.read_csv(chartevents, nrows=0).columns}
            rows = len(pd.read_csv(chartevents, usecols=[header[c] for c in
                                                          ("icustay_id", "itemid", "charttime", "valuenum", "error")]))
            plain.append(time.perf_counter() - tic)
            tic = time.perf_counter()
            _, manifest = mimic3.extract_mimic3(data_dir, Path(tmp) / "mimic3.npz", quiet=True)
            total.append(time.perf_counter() - tic)
            stage.append(manifest["counts"]["timings"]["chartevents_s"])
    chart_rows = manifest["counts"]["chartevents"]["rows_read"]
    assert chart_rows == rows, (chart_rows, rows)
    rows_per_s = chart_rows / min(stage)
    result = {
        "chartevents_rows": chart_rows,
        "stays": manifest["counts"]["stays"],
        "extract_total_s": round(min(total), 3),
        "chartevents_stage_s": round(min(stage), 3),
        "plain_read_csv_s": round(min(plain), 3),
        "chartevents_stage_over_plain_read": round(min(stage) / min(plain), 3),
        "chartevents_rows_per_s": round(rows_per_s),
        "projected_full_chartevents_s": round(FULL_CHARTEVENTS_ROWS / rows_per_s, 1),
        "projected_full_chartevents_min": round(FULL_CHARTEVENTS_ROWS / rows_per_s / 60, 1),
        "cpu_count": os.cpu_count(),
    }
    write_manifest(args.out, config={"data_dir": str(data_dir), "repeats": args.repeats,
                                     "full_chartevents_rows": FULL_CHARTEVENTS_ROWS}, results=result)
    print(f"MIMIC-III extraction, {data_dir} ({chart_rows:,} CHARTEVENTS rows, {result['stays']} stays)")
    print(f"  whole extraction         {result['extract_total_s']:.2f} s")
    print(f"  CHARTEVENTS stage        {result['chartevents_stage_s']:.2f} s = {rows_per_s:,.0f} rows/s")
    print(f"  plain pd.read_csv        {result['plain_read_csv_s']:.2f} s "
          f"(stage / plain read = {result['chartevents_stage_over_plain_read']:.2f})")
    print(f"  projected full table     {result['projected_full_chartevents_min']:.1f} min for "
          f"{FULL_CHARTEVENTS_ROWS:,} rows (linear in rows, same disk and CPU)")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
