"""MIMIC-III and eICU extractors: hand-checked fixtures with the real export columns, then the real demos."""
from __future__ import annotations

import csv
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tardiff import stays
from data_preprocess import eicu, mimic3
from data_preprocess.common import MissingTableError

CH = {c: i for i, c in enumerate(stays.CHANNELS)}

# ---------------------------------------------------------------- MIMIC-III fixture (full-release upper-case headers)
ICUSTAYS_COLS = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "DBSOURCE", "FIRST_CAREUNIT", "LAST_CAREUNIT",
                 "FIRST_WARDID", "LAST_WARDID", "INTIME", "OUTTIME", "LOS"]
ADMISSIONS_COLS = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME", "ADMISSION_TYPE",
                   "ADMISSION_LOCATION", "DISCHARGE_LOCATION", "INSURANCE", "LANGUAGE", "RELIGION",
                   "MARITAL_STATUS", "ETHNICITY", "EDREGTIME", "EDOUTTIME", "DIAGNOSIS", "HOSPITAL_EXPIRE_FLAG",
                   "HAS_CHARTEVENTS_DATA"]
CHARTEVENTS_COLS = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "ITEMID", "CHARTTIME", "STORETIME", "CGID",
                    "VALUE", "VALUENUM", "VALUEUOM", "WARNING", "ERROR", "RESULTSTATUS", "STOPPED"]
OUTPUTEVENTS_COLS = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "CHARTTIME", "ITEMID", "VALUE", "VALUEUOM",
                     "STORETIME", "CGID", "STOPPED", "NEWBOTTLE", "ISERROR"]


def _write(path: Path, columns: list[str], rows: list[dict]) -> None:
    """CSV as the PhysioNet export writes it: every column present, strings quoted, empty = missing."""
    frame = pd.DataFrame([{c: r.get(c, "") for c in columns} for r in rows], columns=columns)
    frame.to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC)


def _chart(icustay, itemid, time, value, error=0):
    return {"ROW_ID": 1, "SUBJECT_ID": 1, "HADM_ID": 1, "ICUSTAY_ID": icustay, "ITEMID": itemid, "CHARTTIME": time,
            "STORETIME": time, "CGID": 1, "VALUE": str(value), "VALUENUM": value, "VALUEUOM": "", "ERROR": error,
            "WARNING": 0, "STOPPED": "NotStopd"}


def _output(icustay, itemid, time, value, iserror=""):
    return {"ROW_ID": 1, "SUBJECT_ID": 1, "HADM_ID": 1, "ICUSTAY_ID": icustay, "CHARTTIME": time, "ITEMID": itemid,
            "VALUE": value, "VALUEUOM": "ml", "STORETIME": time, "CGID": 1, "ISERROR": iserror}


def write_mimic3(folder: Path) -> Path:
    """Stays 1001 (CareVue, 48 h, died, 20 d in hospital), 1002 (MetaVision, 30 h), 1003 (20 h: excluded)."""
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "ICUSTAYS.csv", ICUSTAYS_COLS, [
        {"ROW_ID": 1, "SUBJECT_ID": 1, "HADM_ID": 501, "ICUSTAY_ID": 1001, "DBSOURCE": "carevue",
         "INTIME": "2150-01-01 10:30:00", "OUTTIME": "2150-01-03 10:30:00", "LOS": 2.0},
        {"ROW_ID": 2, "SUBJECT_ID": 2, "HADM_ID": 502, "ICUSTAY_ID": 1002, "DBSOURCE": "metavision",
         "INTIME": "2150-02-01 00:00:00", "OUTTIME": "2150-02-02 06:00:00", "LOS": 1.25},
        {"ROW_ID": 3, "SUBJECT_ID": 3, "HADM_ID": 503, "ICUSTAY_ID": 1003, "DBSOURCE": "metavision",
         "INTIME": "2150-03-01 00:00:00", "OUTTIME": "2150-03-01 20:00:00", "LOS": 0.83}])
    _write(folder / "ADMISSIONS.csv", ADMISSIONS_COLS, [
        {"ROW_ID": 1, "SUBJECT_ID": 1, "HADM_ID": 501, "ADMITTIME": "2150-01-01 08:00:00",
         "DISCHTIME": "2150-01-21 08:00:00", "HOSPITAL_EXPIRE_FLAG": 1, "HAS_CHARTEVENTS_DATA": 1},
        {"ROW_ID": 2, "SUBJECT_ID": 2, "HADM_ID": 502, "ADMITTIME": "2150-01-31 00:00:00",
         "DISCHTIME": "2150-02-04 00:00:00", "HOSPITAL_EXPIRE_FLAG": 0, "HAS_CHARTEVENTS_DATA": 1},
        {"ROW_ID": 3, "SUBJECT_ID": 3, "HADM_ID": 503, "ADMITTIME": "2150-03-01 00:00:00",
         "DISCHTIME": "2150-03-05 00:00:00", "HOSPITAL_EXPIRE_FLAG": 0, "HAS_CHARTEVENTS_DATA": 1}])
    _write(folder / "CHARTEVENTS.csv", CHARTEVENTS_COLS, [
        _chart(1001, 211, "2150-01-01 10:00:00", 200),     # before intime: ignored
        _chart(1001, 211, "not a time", 95),               # unparseable charttime: dropped and counted
        _chart(1001, 211, "2150-01-01 10:45:00", 80),      # hour 0 HR mean 85
        _chart(1001, 211, "2150-01-01 11:15:00", 90),
        _chart(1001, 51, "2150-01-01 11:00:00", 120),      # hour 0 SBP: arterial 120 beats cuff 100
        _chart(1001, 455, "2150-01-01 11:00:00", 100),
        _chart(1001, 8368, "2150-01-01 11:00:00", 60),
        _chart(1001, 52, "2150-01-01 11:00:00", 80),
        _chart(1001, 618, "2150-01-01 11:00:00", 18),
        _chart(1001, 678, "2150-01-01 11:00:00", 98.6),    # °F -> 37 °C
        _chart(1001, 646, "2150-01-01 11:00:00", 97),      # SpO2 only -> 97
        _chart(1001, 455, "2150-01-01 12:00:00", 110),     # hour 1 SBP: cuff only -> 110
        _chart(1001, 834, "2150-01-01 12:00:00", 95),      # hour 1 SaO2: arterial 95 beats SpO2 99
        _chart(1001, 646, "2150-01-01 12:00:00", 99),
        _chart(1001, 676, "2150-01-01 12:00:00", 38.0),    # hour 1 Temp: 38 °C and 100.4 °F -> 38
        _chart(1001, 678, "2150-01-01 12:10:00", 100.4),
        _chart(1001, 211, "2150-01-01 12:40:00", 0),       # hour 2 HR: 0 bpm out of range
        _chart(1001, 211, "2150-01-01 12:50:00", 70, error=1),  # error-flagged: dropped
        _chart(1001, 211, "2150-01-02 11:00:00", 77),      # hour 24: outside the window
        {**_chart(1001, 1, "2150-01-01 11:00:00", ""), "VALUE": "33%"},  # other item, text value
        _chart("", 211, "2150-01-01 11:00:00", 60),        # no ICUSTAY_ID
        _chart(1002, 220045, "2150-02-01 00:30:00", 100),
        _chart(1002, 220050, "2150-02-01 00:30:00", 130),
        _chart(1002, 220179, "2150-02-01 00:40:00", 90),
        _chart(1002, 223761, "2150-02-01 00:30:00", 212),  # 100 °C: out of range
        _chart(1002, 223762, "2150-02-01 01:10:00", 36.5),
        _chart(1003, 220045, "2150-03-01 00:30:00", 100),  # excluded stay
    ])
    _write(folder / "OUTPUTEVENTS.csv", OUTPUTEVENTS_COLS, [
        _output(1001, 40055, "2150-01-01 11:00:00", 40),
        _output(1001, 40055, "2150-01-01 12:45:00", 100),   # hour 2: 100 + 50
        _output(1001, 40069, "2150-01-01 13:00:00", 50),
        _output(1002, 227489, "2150-02-01 03:00:00", 80),   # hour 3: 80 out - 30 irrigant in
        _output(1002, 227488, "2150-02-01 03:30:00", 30),
        _output(1002, 226559, "2150-02-01 04:00:00", 200, iserror=1),  # error-flagged
        _output(1002, 227488, "2150-02-01 05:00:00", 100),  # hour 5: net -100 -> missing
        _output(1002, 40286, "2150-02-01 06:00:00", 60),    # not a urine item
        _output(1003, 226559, "2150-03-01 01:00:00", 60),
    ])
    return folder


@pytest.fixture(scope="module")
def mimic_fixture(tmp_path_factory):
    folder = write_mimic3(tmp_path_factory.mktemp("mimic3") / "csv")
    out = folder.parent / "mimic3.npz"
    arrays, manifest = mimic3.extract_mimic3(folder, out, quiet=True)
    return folder, out, arrays, manifest


def _stay(arrays, record_id):
    return int(np.flatnonzero(arrays["record_id"] == record_id)[0])


def test_mimic3_keeps_stays_of_24h_and_counts_short_ones(mimic_fixture):
    _, _, arrays, manifest = mimic_fixture
    assert arrays["record_id"].tolist() == [1001, 1002]
    assert manifest["excluded_stays"]["shorter_than_24h"] == 1


def test_mimic3_labels_from_admissions(mimic_fixture):
    _, _, arrays, _ = mimic_fixture
    assert arrays["y_mortality"].tolist() == [1, 0]
    assert arrays["y_long_stay"].tolist() == [1, 0]  # 20 d and 4 d in hospital


def test_mimic3_hourly_mean_and_window(mimic_fixture):
    _, _, arrays, _ = mimic_fixture
    hr = arrays["X_raw"][_stay(arrays, 1001), :, CH["HR"]]
    assert hr[0] == pytest.approx(85.0)
    assert np.isnan(hr[1:]).all()  # hour 2: 0 bpm and an error row; hour 24 outside; before intime ignored


def test_mimic3_prefers_invasive_bp_per_hour(mimic_fixture):
    _, _, arrays, _ = mimic_fixture
    sbp = arrays["X_raw"][:, :, CH["SBP"]]
    assert sbp[_stay(arrays, 1001), 0] == 120 and sbp[_stay(arrays, 1001), 1] == 110
    assert sbp[_stay(arrays, 1002), 0] == 130


def test_mimic3_prefers_arterial_sao2_over_spo2(mimic_fixture):
    _, _, arrays, _ = mimic_fixture
    sao2 = arrays["X_raw"][_stay(arrays, 1001), :2, CH["SaO2"]]
    assert sao2.tolist() == [97.0, 95.0]


def test_mimic3_fahrenheit_to_celsius(mimic_fixture):
    _, _, arrays, _ = mimic_fixture
    temp = arrays["X_raw"][:, :, CH["Temp"]]
    assert temp[_stay(arrays, 1001), 0] == pytest.approx(37.0, abs=1e-4)
    assert temp[_stay(arrays, 1001), 1] == pytest.approx(38.0, abs=1e-4)
    assert np.isnan(temp[_stay(arrays, 1002), 0])  # 212 °F = 100 °C is out of range
    assert temp[_stay(arrays, 1002), 1] == pytest.approx(36.5)


def test_mimic3_urine_summed_per_hour_with_irrigant_negative(mimic_fixture):
    _, _, arrays, _ = mimic_fixture
    urine = arrays["X_raw"][:, :, CH["Urine"]]
    a, b = _stay(arrays, 1001), _stay(arrays, 1002)
    assert urine[a, 0] == 40 and urine[a, 2] == 150
    assert urine[b, 3] == 50
    assert np.isnan(urine[b, 4])  # only an error-flagged row
    assert np.isnan(urine[b, 5])  # net -100 mL is not a urine output
    assert np.isnan(urine[b, 6])  # item 40286 is not urine


def test_mimic3_error_rows_dropped_and_counted(mimic_fixture):
    _, _, _, manifest = mimic_fixture
    assert manifest["counts"]["chartevents"]["rows_error_flagged"] == 1
    assert manifest["counts"]["chartevents"]["rows_unparseable_charttime"] == 1
    assert manifest["counts"]["outputevents"]["rows_error_flagged"] == 1


def test_mimic3_out_of_range_counted_per_channel(mimic_fixture):
    _, _, _, manifest = mimic_fixture
    assert manifest["out_of_range"] == {**{c: 0 for c in stays.CHANNELS}, "HR": 1, "Temp": 1, "Urine": 1}


def test_mimic3_output_loads_and_matches_mask(mimic_fixture):
    _, out, arrays, manifest = mimic_fixture
    loaded = stays.load_stays(out)
    np.testing.assert_array_equal(loaded["mask"], ~np.isnan(loaded["X_raw"]))
    assert set(loaded["split"]) <= {"train", "val", "test"}
    assert {"prep_median", "prep_mean", "prep_sd", "prep_clip"} <= set(loaded)
    assert set(manifest["inputs"]) == {"ICUSTAYS.csv", "ADMISSIONS.csv", "CHARTEVENTS.csv", "OUTPUTEVENTS.csv"}
    assert json.loads(out.with_suffix(".json").read_text())["counts"]["stays"] == 2


def test_mimic3_tiny_chunks_give_the_same_result(mimic_fixture, tmp_path):
    folder, _, arrays, _ = mimic_fixture
    chunked, _ = mimic3.extract_mimic3(folder, tmp_path / "chunked.npz", chunksize=2, quiet=True)
    for key in ("X_raw", "X", "record_id", "split"):
        np.testing.assert_array_equal(chunked[key], arrays[key])


def test_mimic3_reads_gzipped_csv(mimic_fixture, tmp_path):
    folder, _, arrays, _ = mimic_fixture
    gz = tmp_path / "gz"
    gz.mkdir()
    for path in folder.glob("*.csv"):
        pd.read_csv(path, dtype=str, keep_default_na=False).to_csv(gz / f"{path.name}.gz", index=False)
    from_gz, _ = mimic3.extract_mimic3(gz, tmp_path / "gz.npz", quiet=True)
    np.testing.assert_array_equal(from_gz["X_raw"], arrays["X_raw"])


def test_mimic3_missing_table_names_the_file(mimic_fixture, tmp_path):
    folder, _, _, _ = mimic_fixture
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    (partial / "OUTPUTEVENTS.csv").unlink()
    with pytest.raises(MissingTableError, match=r"OUTPUTEVENTS\.csv or OUTPUTEVENTS\.csv\.gz"):
        mimic3.extract_mimic3(partial, tmp_path / "x.npz", quiet=True)


def test_mimic3_cli_writes_stays_and_prints_summary(mimic_fixture, tmp_path, capsys):
    folder, _, _, _ = mimic_fixture
    mimic3.main(["--data-dir", str(folder), "--out", str(tmp_path / "cli.npz"), "--chunksize", "5"])
    assert "observed_fraction" in capsys.readouterr().out
    assert stays.load_stays(tmp_path / "cli.npz")["X"].shape == (2, 24, 8)


# ---------------------------------------------------------------- eICU fixture (full-release column names)
PATIENT_COLS = ["patientunitstayid", "patienthealthsystemstayid", "gender", "age", "ethnicity", "hospitalid", "wardid",
                "apacheadmissiondx", "admissionheight", "hospitaladmittime24", "hospitaladmitoffset",
                "hospitaladmitsource", "hospitaldischargeyear", "hospitaldischargetime24", "hospitaldischargeoffset",
                "hospitaldischargelocation", "hospitaldischargestatus", "unittype", "unitadmittime24",
                "unitadmitsource", "unitvisitnumber", "unitstaytype", "admissionweight", "dischargeweight",
                "unitdischargetime24", "unitdischargeoffset", "unitdischargelocation", "unitdischargestatus",
                "uniquepid"]
PERIODIC_COLS = ["vitalperiodicid", "patientunitstayid", "observationoffset", "temperature", "sao2", "heartrate",
                 "respiration", "cvp", "etco2", "systemicsystolic", "systemicdiastolic", "systemicmean", "pasystolic",
                 "padiastolic", "pamean", "st1", "st2", "st3", "icp"]
APERIODIC_COLS = ["vitalaperiodicid", "patientunitstayid", "observationoffset", "noninvasivesystolic",
                  "noninvasivediastolic", "noninvasivemean", "paop", "cardiacoutput", "cardiacinput", "svr", "svri",
                  "pvr", "pvri"]
INTAKE_COLS = ["intakeoutputid", "patientunitstayid", "intakeoutputoffset", "intaketotal", "outputtotal",
               "dialysistotal", "nettotal", "intakeoutputentryoffset", "cellpath", "celllabel", "cellvaluenumeric",
               "cellvaluetext"]
OUT_PATH = "flowsheet|Flowsheet Cell Labels|I&O|Output (ml)|"


def _io(stay, offset, label, value, path=OUT_PATH):
    return {"intakeoutputid": 1, "patientunitstayid": stay, "intakeoutputoffset": offset, "intakeoutputentryoffset":
            offset, "cellpath": path + label, "celllabel": label, "cellvaluenumeric": value, "cellvaluetext": value}


def write_eicu(folder: Path, periodic: bool = True) -> Path:
    """Stays 2001 (died, 21 d in hospital), 2002 (alive, 2 d), 2003 (10 h unit stay), 2004 (unknown status)."""
    folder.mkdir(parents=True, exist_ok=True)
    patient = [
        {"patientunitstayid": 2001, "hospitaladmitoffset": -100, "hospitaldischargeoffset": 30000,
         "hospitaldischargestatus": "Expired", "unitdischargeoffset": 2000, "uniquepid": "002-1"},
        {"patientunitstayid": 2002, "hospitaladmitoffset": -60, "hospitaldischargeoffset": 2820,
         "hospitaldischargestatus": "Alive", "unitdischargeoffset": 1500, "uniquepid": "002-2"},
        {"patientunitstayid": 2003, "hospitaladmitoffset": 0, "hospitaldischargeoffset": 5000,
         "hospitaldischargestatus": "Alive", "unitdischargeoffset": 600, "uniquepid": "002-3"},
        {"patientunitstayid": 2004, "hospitaladmitoffset": 0, "hospitaldischargeoffset": 5000,
         "hospitaldischargestatus": "", "unitdischargeoffset": 3000, "uniquepid": "002-4"}]
    _write(folder / "patient.csv", PATIENT_COLS, patient)
    if periodic:
        p = lambda stay, off, **v: {"vitalperiodicid": 1, "patientunitstayid": stay, "observationoffset": off, **v}
        _write(folder / "vitalPeriodic.csv", PERIODIC_COLS, [
            p(2001, 5, heartrate=80, systemicsystolic=120, systemicdiastolic=60, systemicmean=80, respiration=18,
              temperature=37.2, sao2=97),
            p(2001, 35, heartrate=90),                     # hour 0 HR mean 85
            p(2001, 125, heartrate=400),                   # hour 2: out of range
            p(2001, -30, heartrate=70),                    # before unit admission
            p(2002, 65, heartrate=100, temperature=36.0, respiration=20, sao2=99),
            p(2003, 5, heartrate=100)])
    a = lambda stay, off, s, d, m: {"vitalaperiodicid": 1, "patientunitstayid": stay, "observationoffset": off,
                                    "noninvasivesystolic": s, "noninvasivediastolic": d, "noninvasivemean": m}
    _write(folder / "vitalAperiodic.csv", APERIODIC_COLS, [
        a(2001, 10, 100, 50, 70),        # hour 0: arterial values win
        a(2001, 70, 110, 55, 75),        # hour 1: cuff only
        a(2002, 10, 0, 60, 80)])         # 0 mmHg systolic: out of range
    _write(folder / "intakeOutput.csv", INTAKE_COLS, [
        _io(2001, 30, "Urine", 100), _io(2001, 45, "URINE CATHETER", 50),   # hour 0: 150
        _io(2001, 40, "Urine Count", 3), _io(2001, 50, "Mixed Urine/Stool Volume", 80),
        _io(2001, 50, "Bodyweight (kg)", 72.5, path="flowsheet|Flowsheet Cell Labels|I&O|Weight|"),
        _io(2001, 130, "Urine Output-Foley", 60),                            # hour 2: 60
        _io(2002, 200, "Foley cath", 45)])                                   # hour 3: 45
    return folder


@pytest.fixture(scope="module")
def eicu_fixture(tmp_path_factory):
    folder = write_eicu(tmp_path_factory.mktemp("eicu") / "csv")
    arrays, manifest = eicu.extract_eicu(folder, folder.parent / "eicu.npz", quiet=True)
    return folder, arrays, manifest


def test_eicu_cohort_and_labels(eicu_fixture):
    _, arrays, manifest = eicu_fixture
    assert arrays["record_id"].tolist() == [2001, 2002]
    assert arrays["y_mortality"].tolist() == [1, 0]
    assert arrays["y_long_stay"].tolist() == [1, 0]
    assert manifest["excluded_stays"] == {"shorter_than_24h_or_no_discharge_offset": 1,
                                          "unknown_hospital_discharge_status": 1}


def test_eicu_vitals_binned_and_invasive_bp_preferred(eicu_fixture):
    _, arrays, manifest = eicu_fixture
    x = arrays["X_raw"][0]  # stay 2001
    assert x[0, CH["HR"]] == 85 and np.isnan(x[2, CH["HR"]])
    assert x[0, [CH["SBP"], CH["DBP"], CH["MAP"]]].tolist() == [120, 60, 80]
    assert x[1, [CH["SBP"], CH["DBP"], CH["MAP"]]].tolist() == [110, 55, 75]
    assert np.isnan(arrays["X_raw"][1, 0, CH["SBP"]]) and arrays["X_raw"][1, 0, CH["DBP"]] == 60
    assert manifest["out_of_range"]["HR"] == 1 and manifest["out_of_range"]["SBP"] == 1


def test_eicu_urine_labels_summed_per_hour(eicu_fixture):
    _, arrays, manifest = eicu_fixture
    urine = arrays["X_raw"][:, :, CH["Urine"]]
    assert urine[0, 0] == 150 and urine[0, 2] == 60 and urine[1, 3] == 45
    assert np.isnan(urine[0, 1])
    assert set(manifest["counts"]["intakeOutput"]["urine_labels"]) == {"Urine", "URINE CATHETER",
                                                                       "Urine Output-Foley", "Foley cath"}


def test_eicu_tiny_chunks_give_the_same_result(eicu_fixture, tmp_path):
    folder, arrays, _ = eicu_fixture
    chunked, _ = eicu.extract_eicu(folder, tmp_path / "c.npz", chunksize=1, quiet=True)
    np.testing.assert_array_equal(chunked["X_raw"], arrays["X_raw"])
    np.testing.assert_array_equal(chunked["X"], arrays["X"])


def test_eicu_without_vitalperiodic_warns_and_leaves_channels_unobserved(tmp_path):
    folder = write_eicu(tmp_path / "csv", periodic=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arrays, manifest = eicu.extract_eicu(folder, tmp_path / "e.npz", quiet=True)
    messages = " ".join(str(w.message) for w in caught)
    assert "vitalPeriodic" in messages and "never observed in the training split" in messages
    for channel in ("HR", "RR", "Temp", "SaO2"):
        assert not arrays["mask"][:, :, CH[channel]].any()
        assert (arrays["X"][:, :, CH[channel]] == 0).all()
    assert set(manifest["unobserved_channels"]) == {"HR", "RR", "Temp", "SaO2"}
    assert arrays["mask"][:, :, CH["SBP"]].any()  # cuff BP still there
    stays.load_stays(tmp_path / "e.npz")


def test_eicu_missing_patient_table_names_the_file(tmp_path):
    folder = write_eicu(tmp_path / "csv")
    (folder / "patient.csv").unlink()
    with pytest.raises(MissingTableError, match=r"patient\.csv or patient\.csv\.gz"):
        eicu.extract_eicu(folder, tmp_path / "e.npz", quiet=True)


# ---------------------------------------------------------------- the real demo databases
DEMO = os.environ.get("TARDIFF_DEMO_DIR")
needs_demo = pytest.mark.skipif(
    not DEMO or not (Path(DEMO) / "mimic3-demo").is_dir() or not (Path(DEMO) / "eicu-demo").is_dir(),
    reason="set TARDIFF_DEMO_DIR to the folder holding mimic3-demo/ and eicu-demo/ to test on the real demos")


@pytest.fixture(scope="module")
def mimic_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("mimic3demo") / "mimic3.npz"
    arrays, manifest = mimic3.extract_mimic3(Path(DEMO) / "mimic3-demo", out, quiet=True)
    return out, arrays, manifest


@pytest.fixture(scope="module")
def eicu_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("eicudemo") / "eicu.npz"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arrays, manifest = eicu.extract_eicu(Path(DEMO) / "eicu-demo", out, quiet=True)
    return out, arrays, manifest, [str(w.message) for w in caught]


def _demo_table(name: str) -> pd.DataFrame:
    return pd.read_csv(Path(DEMO) / "mimic3-demo" / f"{name}.csv.gz", low_memory=False)


@needs_demo
def test_mimic3_demo_cohort_matches_a_direct_reading(mimic_demo):
    _, arrays, manifest = mimic_demo
    icu = _demo_table("ICUSTAYS")
    assert len(icu) == 136 and manifest["counts"]["icustays"] == 136
    hours = (pd.to_datetime(icu["outtime"]) - pd.to_datetime(icu["intime"])) / pd.Timedelta(hours=1)
    kept = icu[hours >= 24].merge(_demo_table("ADMISSIONS"), on="hadm_id").sort_values("icustay_id")
    assert len(kept) == 114 and manifest["excluded_stays"]["shorter_than_24h"] == 136 - 114
    np.testing.assert_array_equal(arrays["record_id"], kept["icustay_id"])
    np.testing.assert_array_equal(arrays["y_mortality"], kept["hospital_expire_flag"])
    los = (pd.to_datetime(kept["dischtime"]) - pd.to_datetime(kept["admittime"])) / pd.Timedelta(days=1)
    np.testing.assert_array_equal(arrays["y_long_stay"], (los > 14).astype(int))
    assert 0.2 < arrays["y_mortality"].mean() < 0.45  # the demo over-samples deaths (~32 %)


@needs_demo
def test_mimic3_demo_hr_equals_direct_groupby(mimic_demo):
    _, arrays, _ = mimic_demo
    ce = _demo_table("CHARTEVENTS")
    ce = ce[ce["itemid"].isin([211, 220045]) & (ce["error"] != 1) & ce["valuenum"].between(10, 300)]
    ce = ce.merge(_demo_table("ICUSTAYS")[["icustay_id", "intime"]], on="icustay_id")
    ce["hour"] = np.floor((pd.to_datetime(ce["charttime"]) - pd.to_datetime(ce["intime"]))
                          / pd.Timedelta(hours=1))
    expected = ce[(ce["hour"] >= 0) & (ce["hour"] < 24)].groupby(["icustay_id", "hour"])["valuenum"].mean()
    checked = 0
    for i, icustay in enumerate(arrays["record_id"][:: max(1, len(arrays["record_id"]) // 8)]):
        row = _stay(arrays, icustay)
        want = np.full(24, np.nan)
        if icustay in expected.index.get_level_values(0):
            series = expected.loc[icustay]
            want[series.index.astype(int)] = series.to_numpy()
        np.testing.assert_allclose(arrays["X_raw"][row, :, CH["HR"]], want, rtol=1e-5, equal_nan=True)
        checked += int(np.isfinite(want).sum())
    assert checked > 50


@needs_demo
def test_mimic3_demo_values_in_range_and_mask_consistent(mimic_demo):
    out, arrays, _ = mimic_demo
    loaded = stays.load_stays(out)
    np.testing.assert_array_equal(loaded["mask"], ~np.isnan(loaded["X_raw"]))
    for j, channel in enumerate(stays.CHANNELS):
        values = loaded["X_raw"][:, :, j][loaded["mask"][:, :, j]]
        low, high = stays.VALID_RANGES[channel]
        assert values.size > 0 and values.min() >= low and values.max() <= high, channel
    split = loaded["split"]
    assert abs((split == "test").mean() - 0.2) < 0.03 and abs((split == "val").mean() - 0.1) < 0.03


@needs_demo
def test_eicu_demo_without_vitalperiodic(eicu_demo):
    out, arrays, manifest, messages = eicu_demo
    patient = pd.read_csv(Path(DEMO) / "eicu-demo" / "patient.csv.gz")
    kept = patient[(patient["unitdischargeoffset"] >= 1440) & patient["hospitaldischargestatus"].notna()]
    np.testing.assert_array_equal(arrays["record_id"], np.sort(kept["patientunitstayid"].to_numpy()))
    assert arrays["y_mortality"].mean() == pytest.approx((kept["hospitaldischargestatus"] == "Expired").mean())
    assert any("vitalPeriodic" in m for m in messages)
    assert manifest["counts"]["vitalPeriodic"] == "missing"
    for channel in ("HR", "RR", "Temp", "SaO2"):
        assert not arrays["mask"][:, :, CH[channel]].any()
    for channel in ("SBP", "DBP", "MAP", "Urine"):
        values = arrays["X_raw"][:, :, CH[channel]][arrays["mask"][:, :, CH[channel]]]
        low, high = stays.VALID_RANGES[channel]
        assert values.size > 1000 and values.min() >= low and values.max() <= high, channel
    loaded = stays.load_stays(out)
    np.testing.assert_array_equal(loaded["mask"], ~np.isnan(loaded["X_raw"]))
