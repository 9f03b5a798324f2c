"""eICU-CRD -> the PhysioNet-2012-like stays `.npz` (first 24 h of every ICU unit stay).

Needs patient, vitalAperiodic and intakeOutput as .csv or .csv.gz; vitalPeriodic (HR, RR,
SaO2, temperature, invasive BP) is used when present, else those channels are reported
unobserved with a warning (the public demo lacks it). Tables are streamed in chunks.

    python -m data_preprocess.eicu --data-dir DIR --out outputs/data/eicu.npz
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from tardiff import stays
from data_preprocess.common import (DEFAULT_CHUNKSIZE, HourlyCollector, check_cohort, finish, find_table,
                                    read_chunks, read_table, run_cli)

TABLES = ("patient", "vitalAperiodic", "intakeOutput")
OPTIONAL_TABLES = ("vitalPeriodic",)

# Wide vital-sign columns -> channel. vitalPeriodic (5-min medians) is primary; the
# non-invasive cuff BP of vitalAperiodic fills hours without an arterial-line value.
PERIODIC_COLUMNS = {"heartrate": "HR", "systemicsystolic": "SBP", "systemicdiastolic": "DBP",
                    "systemicmean": "MAP", "respiration": "RR", "temperature": "Temp", "sao2": "SaO2"}
APERIODIC_COLUMNS = {"noninvasivesystolic": "SBP", "noninvasivediastolic": "DBP", "noninvasivemean": "MAP"}
# intakeOutput rows counted as urine volume (mL): cellpath under an "Output" section, label or
# path mentioning urine/foley, excluding counts and mixed stool (e.g. "Urine Count",
# "Urine Occurrence", "Mixed Urine/Stool Volume").
URINE_PATH_PATTERN = r"output"
URINE_LABEL_PATTERN = r"urin|foley"
URINE_EXCLUDE_PATTERN = r"count|occurrence|stool"
EXPIRED = "Expired"


def load_cohort(patient: Path, hours: int) -> tuple[pd.DataFrame, dict]:
    """Unit stays of at least `hours`, with mortality and hospital LOS; excluded stays per reason."""
    p = read_table(patient, ["patientunitstayid", "unitdischargeoffset", "hospitaladmitoffset",
                             "hospitaldischargeoffset", "hospitaldischargestatus"])
    short = ~(p["unitdischargeoffset"] >= hours * 60)  # NaN offsets count as short
    status = p["hospitaldischargestatus"].astype("string").str.strip()
    no_label = ~short & ~status.isin([EXPIRED, "Alive"]).fillna(False).astype(bool)
    excluded = {f"shorter_than_{hours}h_or_no_discharge_offset": int(short.sum()),
                "unknown_hospital_discharge_status": int(no_label.sum())}
    cohort = p[~(short | no_label)].copy()
    cohort["y_mortality"] = (status[cohort.index] == EXPIRED).astype(np.int64)
    cohort["los_days"] = (cohort["hospitaldischargeoffset"] - cohort["hospitaladmitoffset"]) / (24 * 60)
    cohort = cohort.sort_values("patientunitstayid").reset_index(drop=True)
    check_cohort(p.dropna(subset=["patientunitstayid"]), patient, "patientunitstayid", excluded,
                 "hospitaldischargestatus (Alive/Expired)")
    check_cohort(cohort, patient, "patientunitstayid", excluded, "hospitaldischargestatus (Alive/Expired)")
    cohort["patientunitstayid"] = cohort["patientunitstayid"].astype(np.int64)
    return cohort, excluded


def _stay_hour(chunk: pd.DataFrame, stay_index: pd.Index, offset_column: str) -> tuple[np.ndarray, np.ndarray]:
    """Row -> (index into the cohort or -1, floor hours since unit admission; offsets are minutes)."""
    stay_idx = stay_index.get_indexer(chunk["patientunitstayid"])
    offset = chunk[offset_column].to_numpy(dtype=np.float64)
    hour = np.floor(offset / 60.0)
    stay_idx[np.isnan(hour)] = -1
    return stay_idx, np.nan_to_num(hour, nan=-1).astype(np.int64)


def read_vitals(path: Path, columns: dict[str, str], fallback: bool, cohort: pd.DataFrame,
                collector: HourlyCollector, chunksize: int) -> dict:
    """Stream a wide vital-sign table (one column per channel) into `collector`."""
    stay_index = pd.Index(cohort["patientunitstayid"])
    counts = {"rows_read": 0}
    dtype = {c: "float64" for c in columns}
    for chunk in read_chunks(path, ["patientunitstayid", "observationoffset", *columns], chunksize, dtype, counts):
        counts["rows_read"] += len(chunk)
        stay_idx, hour = _stay_hour(chunk, stay_index, "observationoffset")
        for column, channel in columns.items():  # a handful of columns, not rows
            collector.add(stay_idx, hour, np.full(len(chunk), stays.channel_index(channel)),
                          chunk[column].to_numpy(np.float64), fallback=fallback)
    return counts


def is_urine(cellpath: pd.Series, celllabel: pd.Series) -> np.ndarray:
    """Which intakeOutput rows are a urine output volume (see URINE_* patterns)."""
    path, label = cellpath.fillna("").astype(str), celllabel.fillna("").astype(str)
    text = path + "|" + label
    return (path.str.contains(URINE_PATH_PATTERN, case=False, regex=True)
            & text.str.contains(URINE_LABEL_PATTERN, case=False, regex=True)
            & ~label.str.contains(URINE_EXCLUDE_PATTERN, case=False, regex=True)).to_numpy()


def read_intake_output(path: Path, cohort: pd.DataFrame, collector: HourlyCollector, chunksize: int) -> dict:
    """Stream intakeOutput urine volumes into `collector`; returns row counts and the labels used."""
    stay_index = pd.Index(cohort["patientunitstayid"])
    counts = {"rows_read": 0, "rows_urine": 0}
    labels: dict[str, int] = {}
    columns = ["patientunitstayid", "intakeoutputoffset", "cellpath", "celllabel", "cellvaluenumeric"]
    dtype = {"cellpath": "str", "celllabel": "str", "cellvaluenumeric": "float64"}
    for chunk in read_chunks(path, columns, chunksize, dtype, counts):
        counts["rows_read"] += len(chunk)
        chunk = chunk[is_urine(chunk["cellpath"], chunk["celllabel"])]
        counts["rows_urine"] += len(chunk)
        for label, n in chunk["celllabel"].value_counts().items():
            labels[label] = labels.get(label, 0) + int(n)
        stay_idx, hour = _stay_hour(chunk, stay_index, "intakeoutputoffset")
        collector.add(stay_idx, hour, np.full(len(chunk), stays.channel_index("Urine")),
                      chunk["cellvaluenumeric"].to_numpy(np.float64))
    counts["urine_labels"] = dict(sorted(labels.items(), key=lambda kv: -kv[1]))
    return counts


def extract_eicu(data_dir, out, hours: int = 24, seed: int = 0, chunksize: int = DEFAULT_CHUNKSIZE,
                 quiet: bool = False) -> tuple[dict, dict]:
    """Write `out` (.npz stays) and `out` .json (manifest); return (arrays, manifest)."""
    started = time.perf_counter()
    paths = {name: find_table(data_dir, name, "eICU") for name in TABLES}
    periodic = find_table(data_dir, "vitalPeriodic", "eICU", required=False)
    cohort, excluded = load_cohort(paths["patient"], hours)
    collector = HourlyCollector(len(cohort), hours)
    counts = {"patient_rows": int(len(cohort) + sum(excluded.values()))}
    if periodic is None:
        missing = sorted({PERIODIC_COLUMNS[c] for c in PERIODIC_COLUMNS} - set(APERIODIC_COLUMNS.values()))
        warnings.warn(f"eICU table vitalPeriodic(.csv/.csv.gz) not found in {data_dir}: channels {missing} "
                      "will be unobserved (all-missing mask) and BP comes from vitalAperiodic only",
                      stacklevel=2)
        counts["vitalPeriodic"] = "missing"
    else:
        paths["vitalPeriodic"] = periodic
        counts["vitalPeriodic"] = read_vitals(periodic, PERIODIC_COLUMNS, False, cohort, collector, chunksize)
    counts["vitalAperiodic"] = read_vitals(paths["vitalAperiodic"], APERIODIC_COLUMNS, True, cohort,
                                           collector, chunksize)
    counts["intakeOutput"] = read_intake_output(paths["intakeOutput"], cohort, collector, chunksize)
    counts["rows_binned"] = collector.rows_kept
    X_raw = collector.to_hourly()  # (N, hours, F)
    config = {"data_dir": str(data_dir), "hours": hours, "seed": seed, "chunksize": chunksize,
              "periodic_columns": PERIODIC_COLUMNS, "aperiodic_columns": APERIODIC_COLUMNS,
              "urine_rule": {"cellpath": URINE_PATH_PATTERN, "label_or_path": URINE_LABEL_PATTERN,
                             "label_excludes": URINE_EXCLUDE_PATTERN}}
    return finish(name="eICU", X_raw=X_raw, record_id=cohort["patientunitstayid"].to_numpy(),
                  y_mortality=cohort["y_mortality"].to_numpy(), hospital_los_days=cohort["los_days"].to_numpy(),
                  out=out, seed=seed, config=config, inputs=list(paths.values()), counts=counts,
                  excluded=excluded, out_of_range=collector.out_of_range, started=started, quiet=quiet)


def main(argv=None) -> None:
    run_cli(argv, prog="python -m data_preprocess.eicu", database="eICU", extract=extract_eicu,
            description=__doc__.split("\n\n")[0] + " Needs "
            + ", ".join(f"{t}.csv[.gz]" for t in TABLES) + " in --data-dir; vitalPeriodic.csv[.gz] optional "
            "(without it HR, RR, Temp, SaO2 are unobserved).")


if __name__ == "__main__":
    main()
