"""MIMIC-III (CareVue + MetaVision) -> the PhysioNet-2012-like stays `.npz` (first 24 h of every ICU stay).

Needs ICUSTAYS, ADMISSIONS, CHARTEVENTS and OUTPUTEVENTS as .csv or .csv.gz (upper- or
lower-case headers). CHARTEVENTS is streamed in chunks and filtered to the item ids below,
so the full 330-million-row table never sits in memory.

    python -m data_preprocess.mimic3 --data-dir DIR --out outputs/data/mimic3.npz
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from tardiff import stays
from data_preprocess.common import (DEFAULT_CHUNKSIZE, NAT, NS_PER_HOUR, HourlyCollector, check_cohort, finish,
                                    find_table, read_chunks, read_table, run_cli, to_ns)

TABLES = ("ICUSTAYS", "ADMISSIONS", "CHARTEVENTS", "OUTPUTEVENTS")

# CHARTEVENTS item ids per channel. "primary" wins an hour; "fallback" fills hours without it
# (invasive arterial-line BP over cuff BP; blood-gas SaO2 over pulse-oximetry SpO2).
CHART_ITEMS = {
    ("HR", "primary"): {"carevue": (211,), "metavision": (220045,)},
    ("SBP", "primary"): {"carevue": (51, 6701), "metavision": (220050, 225309)},
    ("SBP", "fallback"): {"carevue": (442, 455), "metavision": (220179, 224167, 227243)},
    ("DBP", "primary"): {"carevue": (8368, 8555), "metavision": (220051, 225310)},
    ("DBP", "fallback"): {"carevue": (8440, 8441), "metavision": (220180, 224643, 227242)},
    ("MAP", "primary"): {"carevue": (52, 6702), "metavision": (220052, 225312)},
    ("MAP", "fallback"): {"carevue": (443, 456), "metavision": (220181,)},
    ("RR", "primary"): {"carevue": (615, 618), "metavision": (220210, 224690)},
    ("Temp", "primary"): {"carevue": (676, 678), "metavision": (223761, 223762)},
    ("SaO2", "primary"): {"carevue": (834,), "metavision": (220227,)},
    ("SaO2", "fallback"): {"carevue": (646,), "metavision": (220277,)},
}
FAHRENHEIT_ITEMS = (678, 223761)  # "Temperature F", "Temperature Fahrenheit": converted to °C
# OUTPUTEVENTS urine volumes (mL), summed per hour. 227488 "GU Irrigant Volume In" counts
# negative so that 227489 "GU Irrigant/Urine Volume Out" minus irrigant is net urine.
URINE_ITEMS = {
    "carevue": (40055, 43175, 40069, 40094, 40715, 40473, 40085, 40057, 40056, 40405, 40428,
                40096, 40651),
    "metavision": (226559, 226560, 226561, 226584, 226563, 226564, 226565, 226567, 226557,
                   226558, 227488, 227489),
}
URINE_NEGATIVE_ITEMS = (227488,)


def _chart_lookup() -> tuple[pd.Index, np.ndarray, np.ndarray, np.ndarray]:
    """Item id index and, per item, its channel index, fallback flag and Fahrenheit flag."""
    rows = [(item, stays.channel_index(channel), source == "fallback", item in FAHRENHEIT_ITEMS)
            for (channel, source), by_db in CHART_ITEMS.items() for ids in by_db.values() for item in ids]
    items, channel, fallback, fahrenheit = map(np.array, zip(*rows))
    return pd.Index(items), channel, fallback, fahrenheit


def load_cohort(icustays: Path, admissions: Path, hours: int) -> tuple[pd.DataFrame, dict]:
    """ICU stays lasting at least `hours`, with mortality and hospital LOS; excluded stays per reason."""
    icu = read_table(icustays, ["icustay_id", "hadm_id", "intime", "outtime"])
    adm = read_table(admissions, ["hadm_id", "admittime", "dischtime", "hospital_expire_flag"])
    icu["intime_ns"], icu["outtime_ns"] = to_ns(icu["intime"]), to_ns(icu["outtime"])
    adm = adm.drop_duplicates("hadm_id")
    adm["los_days"] = (to_ns(adm["dischtime"]) - to_ns(adm["admittime"])) / (24 * NS_PER_HOUR)
    adm.loc[(to_ns(adm["dischtime"]) == NAT) | (to_ns(adm["admittime"]) == NAT), "los_days"] = np.nan
    icu = icu.merge(adm[["hadm_id", "los_days", "hospital_expire_flag"]], on="hadm_id", how="left")

    no_times = (icu["intime_ns"] == NAT) | (icu["outtime_ns"] == NAT)
    short = ~no_times & ((icu["outtime_ns"] - icu["intime_ns"]) < hours * NS_PER_HOUR)
    no_label = ~no_times & ~short & ~icu["hospital_expire_flag"].isin([0, 1])
    excluded = {"missing_intime_or_outtime": int(no_times.sum()), f"shorter_than_{hours}h": int(short.sum()),
                "no_admission_or_mortality_label": int(no_label.sum())}
    cohort = icu[~(no_times | short | no_label)].sort_values("icustay_id").reset_index(drop=True)
    check_cohort(icu.dropna(subset=["icustay_id"]), icustays, "icustay_id", excluded, "hospital_expire_flag (0/1)")
    check_cohort(cohort, icustays, "icustay_id", excluded, "hospital_expire_flag (0/1)")
    cohort["icustay_id"] = cohort["icustay_id"].astype(np.int64)
    return cohort, excluded


def _stay_hour(chunk: pd.DataFrame, stay_index: pd.Index, intime_ns: np.ndarray,
               counts: dict) -> tuple[np.ndarray, np.ndarray]:
    """Row -> (index into the cohort or -1, floor hours since ICU intime); rows of cohort stays whose
    charttime does not parse are dropped and counted in `counts["rows_unparseable_charttime"]`."""
    stay_idx = stay_index.get_indexer(chunk["icustay_id"])
    t = to_ns(chunk["charttime"])
    unparseable = (t == NAT) & (stay_idx >= 0)
    counts["rows_unparseable_charttime"] = counts.get("rows_unparseable_charttime", 0) + int(unparseable.sum())
    stay_idx[t == NAT] = -1
    hour = np.where(stay_idx >= 0, (t - intime_ns[np.maximum(stay_idx, 0)]) // NS_PER_HOUR, -1)
    return stay_idx, hour


def read_chartevents(path: Path, cohort: pd.DataFrame, collector: HourlyCollector, chunksize: int) -> dict:
    """Stream CHARTEVENTS into `collector`; returns row counts (read, matching items, error-flagged)."""
    items, item_channel, item_fallback, item_fahrenheit = _chart_lookup()
    stay_index, intime_ns = pd.Index(cohort["icustay_id"]), cohort["intime_ns"].to_numpy()
    counts = {"rows_read": 0, "rows_item_match": 0, "rows_error_flagged": 0, "rows_unparseable_charttime": 0}
    dtype = {"icustay_id": "float64", "itemid": "int64", "valuenum": "float64", "error": "float64"}
    columns = ["icustay_id", "itemid", "charttime", "valuenum", "error"]
    for chunk in read_chunks(path, columns, chunksize, dtype, counts):
        counts["rows_read"] += len(chunk)
        chunk = chunk[chunk["itemid"].isin(items)]
        counts["rows_item_match"] += len(chunk)
        error = chunk["error"].to_numpy() == 1
        counts["rows_error_flagged"] += int(error.sum())
        chunk = chunk[~error]
        k = items.get_indexer(chunk["itemid"])  # (n,) position in the item table
        values = chunk["valuenum"].to_numpy(dtype=np.float64)
        values = np.where(item_fahrenheit[k], (values - 32.0) * 5.0 / 9.0, values)
        stay_idx, hour = _stay_hour(chunk, stay_index, intime_ns, counts)
        collector.add(stay_idx, hour, item_channel[k], values, fallback=item_fallback[k])
    return counts


def read_outputevents(path: Path, cohort: pd.DataFrame, collector: HourlyCollector, chunksize: int) -> dict:
    """Stream OUTPUTEVENTS urine volumes into `collector`; returns row counts."""
    urine = np.array(sorted({i for ids in URINE_ITEMS.values() for i in ids}))
    stay_index, intime_ns = pd.Index(cohort["icustay_id"]), cohort["intime_ns"].to_numpy()
    counts = {"rows_read": 0, "rows_item_match": 0, "rows_error_flagged": 0, "rows_unparseable_charttime": 0}
    dtype = {"icustay_id": "float64", "itemid": "int64", "value": "float64", "iserror": "float64"}
    columns = ["icustay_id", "itemid", "charttime", "value", "iserror"]
    urine_idx = stays.channel_index("Urine")
    for chunk in read_chunks(path, columns, chunksize, dtype, counts):
        counts["rows_read"] += len(chunk)
        chunk = chunk[chunk["itemid"].isin(urine)]
        counts["rows_item_match"] += len(chunk)
        error = chunk["iserror"].to_numpy() == 1
        counts["rows_error_flagged"] += int(error.sum())
        chunk = chunk[~error]
        signs = np.where(chunk["itemid"].isin(URINE_NEGATIVE_ITEMS), -1.0, 1.0)
        stay_idx, hour = _stay_hour(chunk, stay_index, intime_ns, counts)
        collector.add(stay_idx, hour, np.full(len(chunk), urine_idx), chunk["value"].to_numpy(np.float64),
                      signs=signs)
    return counts


def extract_mimic3(data_dir, out, hours: int = 24, seed: int = 0, chunksize: int = DEFAULT_CHUNKSIZE,
                   quiet: bool = False) -> tuple[dict, dict]:
    """Write `out` (.npz stays) and `out` .json (manifest); return (arrays, manifest)."""
    started = time.perf_counter()
    paths = {name: find_table(data_dir, name, "MIMIC-III") for name in TABLES}
    cohort, excluded = load_cohort(paths["ICUSTAYS"], paths["ADMISSIONS"], hours)
    collector = HourlyCollector(len(cohort), hours)
    timings = {}
    tic = time.perf_counter()
    chart_counts = read_chartevents(paths["CHARTEVENTS"], cohort, collector, chunksize)
    timings["chartevents_s"] = round(time.perf_counter() - tic, 3)
    tic = time.perf_counter()
    output_counts = read_outputevents(paths["OUTPUTEVENTS"], cohort, collector, chunksize)
    timings["outputevents_s"] = round(time.perf_counter() - tic, 3)
    X_raw = collector.to_hourly()  # (N, hours, F)
    config = {"data_dir": str(data_dir), "hours": hours, "seed": seed, "chunksize": chunksize,
              "chart_items": {f"{c}/{s}": v for (c, s), v in CHART_ITEMS.items()},
              "fahrenheit_items": FAHRENHEIT_ITEMS, "urine_items": URINE_ITEMS,
              "urine_negative_items": URINE_NEGATIVE_ITEMS}
    counts = {"icustays": int(len(cohort) + sum(excluded.values())), "chartevents": chart_counts,
              "outputevents": output_counts, "rows_binned": collector.rows_kept, "timings": timings}
    return finish(name="MIMIC-III", X_raw=X_raw, record_id=cohort["icustay_id"].to_numpy(),
                  y_mortality=cohort["hospital_expire_flag"].to_numpy(), hospital_los_days=cohort["los_days"].to_numpy(),
                  out=out, seed=seed, config=config, inputs=list(paths.values()), counts=counts,
                  excluded=excluded, out_of_range=collector.out_of_range, started=started, quiet=quiet)


def main(argv=None) -> None:
    run_cli(argv, prog="python -m data_preprocess.mimic3", database="MIMIC-III", extract=extract_mimic3,
            description=__doc__.split("\n\n")[0] + " Needs "
            + ", ".join(f"{t}.csv[.gz]" for t in TABLES) + " in --data-dir (D_ITEMS not needed).")


if __name__ == "__main__":
    main()
