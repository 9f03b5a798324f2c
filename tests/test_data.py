"""PhysioNet 2012 extraction: against a slow direct reading of the files, and on every kind of bad input."""
from __future__ import annotations

import gzip
import io
import json
import logging
import shutil
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from tardiff import data, stays
from tardiff.__main__ import main as cli

# The spec's mapping, written out independently of tardiff.data: parameter -> (channel, is_fallback).
SOURCE = {"HR": ("HR", 0), "SysABP": ("SBP", 0), "DiasABP": ("DBP", 0), "MAP": ("MAP", 0),
          "RespRate": ("RR", 0), "Temp": ("Temp", 0), "SaO2": ("SaO2", 0), "Urine": ("Urine", 0),
          "NISysABP": ("SBP", 1), "NIDiasABP": ("DBP", 1), "NIMAP": ("MAP", 1)}


def reference_stay(text: str, hours: int = 24) -> np.ndarray:
    """(hours, 8) hourly values read line by line: means (urine sums), invasive BP else non-invasive."""
    totals, counts = {}, {}
    for line in text.splitlines()[1:]:
        time, parameter, value = line.split(",")
        hh, mm = time.split(":")
        minute = int(hh) * 60 + int(mm)
        if minute >= hours * 60 or parameter not in SOURCE:
            continue
        channel, fallback = SOURCE[parameter]
        low, high = stays.VALID_RANGES[channel]
        if not low <= float(value) <= high:
            continue
        key = (minute // 60, channel, fallback)
        totals[key] = totals.get(key, 0.0) + float(value)
        counts[key] = counts.get(key, 0) + 1
    out = np.full((hours, len(stays.CHANNELS)), np.nan)
    for (hour, channel, fallback), total in sorted(totals.items(), key=lambda kv: -kv[0][2]):
        # fallback keys first, so invasive values overwrite them
        out[hour, stays.CHANNELS.index(channel)] = (
            total if channel == "Urine" else total / counts[(hour, channel, fallback)])
    return out


def read_archive(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def write_archive(path: Path, files: dict[str, bytes]) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    path.write_bytes(gzip.compress(buffer.getvalue()))


def stay_file(record_id: int, rows: list[str]) -> bytes:
    lines = ["Time,Parameter,Value", f"00:00,RecordID,{record_id}", *rows]
    return "".join(line + "\n" for line in lines).encode()


def make_data_dir(tmp_path: Path, fixture_dir: Path, add: dict | None = None,
                  outcomes: list[str] | None = None, drop_outcomes: tuple = ()) -> Path:
    """The vendored sample plus extra set-a members `add` and extra set-a outcome rows."""
    folder = tmp_path / "data"
    folder.mkdir()
    files = read_archive(fixture_dir / "set-a.tar.gz")
    files.update(add or {})
    write_archive(folder / "set-a.tar.gz", files)
    (folder / "set-b.tar.gz").write_bytes((fixture_dir / "set-b.tar.gz").read_bytes())
    lines = (fixture_dir / "Outcomes-a.txt").read_text().splitlines()
    lines = [l for l in lines if l.split(",")[0] not in {str(r) for r in drop_outcomes}] + (outcomes or [])
    (folder / "Outcomes-a.txt").write_text("\n".join(lines) + "\n")
    (folder / "Outcomes-b.txt").write_text((fixture_dir / "Outcomes-b.txt").read_text())
    return folder


def run(folder: Path, tmp_path: Path, **kwargs) -> tuple[dict, dict]:
    paths = data.extract(folder, tmp_path / "out", **kwargs)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    return {name: stays.load_stays(p) for name, p in paths.items()}, manifest


@pytest.fixture(scope="module")
def sample(fixture_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    paths = data.extract(fixture_dir, out)
    return {name: stays.load_stays(p) for name, p in paths.items()}, out


GOOD = ["00:10,HR,80", "00:20,SysABP,120", "00:20,DiasABP,60", "00:20,MAP,80", "00:30,RespRate,18",
        "00:30,Temp,37", "00:30,SaO2,97", "00:40,Urine,50"]


# ----------------------------------------------------------------------------------------- values


def test_every_stay_matches_a_direct_reading_of_its_file(sample, fixture_dir):
    arrays, _ = sample
    for name in ("set-a", "set-b"):
        files = read_archive(fixture_dir / f"{name}.tar.gz")
        texts = {int(Path(k).stem): v.decode() for k, v in files.items()}
        X_raw = arrays[name]["X_raw"]
        for i, record_id in enumerate(arrays[name]["record_id"]):
            np.testing.assert_allclose(X_raw[i], reference_stay(texts[int(record_id)]), rtol=1e-5,
                                       equal_nan=True, err_msg=f"{name} record {record_id}")


def test_outputs_have_the_documented_keys_and_types(sample):
    arrays, _ = sample
    for name, arr in arrays.items():
        n = len(arr["record_id"])
        assert arr["X_raw"].shape == arr["X"].shape == (n, 24, 8) and arr["X"].dtype == np.float32
        assert arr["mask"].dtype == np.bool_ and np.array_equal(arr["mask"], ~np.isnan(arr["X_raw"]))
        assert np.isfinite(arr["X"]).all()
        assert arr["record_id"].dtype == arr["y_mortality"].dtype == arr["y_long_stay"].dtype == np.int64
        assert arr["channels"].dtype.kind == "U" and tuple(arr["channels"]) == stays.CHANNELS
        assert {"prep_median", "prep_mean", "prep_sd", "prep_clip"} <= set(arr)
    assert len(arrays["set-a"]["record_id"]) == 60 and len(arrays["set-b"]["record_id"]) == 30
    assert set(arrays["set-b"]["split"]) == {"test"} and set(arrays["set-a"]["split"]) == {"train", "val"}
    assert (arrays["set-a"]["y_long_stay"] == -1).sum() >= 1  # the stay with Length_of_stay -1


def test_preprocessor_is_fitted_on_set_a_train_rows_only(sample):
    arrays, _ = sample
    a = arrays["set-a"]
    expected = stays.Preprocessor.fit(a["X_raw"][a["split"] == "train"])
    for arr in arrays.values():
        np.testing.assert_array_equal(arr["prep_median"], expected.median)
        np.testing.assert_array_equal(arr["prep_sd"], expected.sd)
        np.testing.assert_allclose(arr["X"], expected.to_model(arr["X_raw"]))


def test_validation_split_is_stratified_by_mortality_and_follows_the_seed(fixture_dir, tmp_path):
    arrays, _ = run(fixture_dir, tmp_path, seed=0, val_fraction=0.2)
    a = arrays["set-a"]
    for label in (0, 1):
        rows = a["y_mortality"] == label
        assert (a["split"][rows] == "val").sum() == round(0.2 * rows.sum())
    other, _ = run(fixture_dir, tmp_path, seed=1, val_fraction=0.2)
    assert not np.array_equal(other["set-a"]["split"], a["split"])


def test_invasive_bp_is_preferred_per_hour_and_non_invasive_fills_the_rest(fixture_dir, tmp_path):
    rows = GOOD + ["00:50,NISysABP,150", "01:10,NISysABP,140", "01:15,NISysABP,130", "02:00,NIMAP,70"]
    folder = make_data_dir(tmp_path, fixture_dir, add={"set-a/900001.txt": stay_file(900001, rows)},
                           outcomes=["900001,1,1,3,-1,0"])
    arrays, _ = run(folder, tmp_path)
    x = arrays["set-a"]["X_raw"][arrays["set-a"]["record_id"] == 900001][0]
    sbp, map_ = stays.CHANNELS.index("SBP"), stays.CHANNELS.index("MAP")
    assert x[0, sbp] == 120 and x[1, sbp] == 135 and np.isnan(x[2, sbp])
    assert x[0, map_] == 80 and x[2, map_] == 70


def test_a_value_at_exactly_24h_is_outside_the_window(fixture_dir, tmp_path):
    rows = GOOD + ["23:59,HR,100", "24:00,HR,200", "24:00,Urine,400"]
    folder = make_data_dir(tmp_path, fixture_dir, add={"set-a/900002.txt": stay_file(900002, rows)},
                           outcomes=["900002,1,1,3,-1,0"])
    arrays, _ = run(folder, tmp_path)
    x = arrays["set-a"]["X_raw"][arrays["set-a"]["record_id"] == 900002][0]
    assert x[23, 0] == 100 and np.isnan(x[23, stays.CHANNELS.index("Urine")])


def test_minus_one_and_out_of_range_values_are_missing_and_counted(fixture_dir, tmp_path):
    rows = GOOD + ["01:00,HR,-1", "01:30,HR,0", "02:00,Temp,1.5", "02:10,Temp,36.5"]
    folder = make_data_dir(tmp_path, fixture_dir, add={"set-a/900003.txt": stay_file(900003, rows)},
                           outcomes=["900003,1,1,3,-1,0"])
    arrays, manifest = run(folder, tmp_path)
    x = arrays["set-a"]["X_raw"][arrays["set-a"]["record_id"] == 900003][0]
    assert np.isnan(x[1, 0]) and x[2, stays.CHANNELS.index("Temp")] == 36.5
    _, base = run(fixture_dir, tmp_path / "base")
    assert manifest["out_of_range"]["set-a"]["HR"] == base["out_of_range"]["set-a"].get("HR", 0) + 2
    assert manifest["out_of_range"]["set-a"]["Temp"] == base["out_of_range"]["set-a"].get("Temp", 0) + 1


def test_extracted_folder_gives_the_same_result_as_the_archive(fixture_dir, tmp_path, sample):
    folder = tmp_path / "data"
    folder.mkdir()
    with tarfile.open(fixture_dir / "set-a.tar.gz", "r:gz") as tar:
        tar.extractall(folder, filter="data")
    for name in ("set-b.tar.gz", "Outcomes-a.txt", "Outcomes-b.txt"):
        (folder / name).write_bytes((fixture_dir / name).read_bytes())
    arrays, _ = run(folder, tmp_path)
    np.testing.assert_array_equal(arrays["set-a"]["X"], sample[0]["set-a"]["X"])


# ----------------------------------------------------------------------------------------- cache


def test_second_run_reuses_the_cache_and_force_or_changes_redo_it(fixture_dir, tmp_path, monkeypatch):
    data.extract(fixture_dir, tmp_path / "out")
    calls = []
    real = data.extract_set
    monkeypatch.setattr(data, "extract_set", lambda *a, **k: calls.append(1) or real(*a, **k))
    data.extract(fixture_dir, tmp_path / "out")
    assert calls == []
    data.extract(fixture_dir, tmp_path / "out", force=True)
    assert len(calls) == 2
    data.extract(fixture_dir, tmp_path / "out", seed=3)
    assert len(calls) == 4
    folder = Path(shutil.copytree(fixture_dir, tmp_path / "moved"))
    data.extract(folder, tmp_path / "out", seed=3)
    assert len(calls) == 4  # identical inputs: reused although the folder moved
    outcomes = folder / "Outcomes-b.txt"
    outcomes.write_text(outcomes.read_text().rsplit("\n", 2)[0] + "\n")  # one outcome row less
    data.extract(folder, tmp_path / "out", seed=3)
    assert len(calls) == 6


# ----------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_archive_is_an_error_naming_it(fixture_dir, tmp_path, damage):
    folder = make_data_dir(tmp_path, fixture_dir)
    archive = folder / "set-b.tar.gz"
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"not a tar" * 100)
    with pytest.raises(data.PhysioNetError, match="set-b.tar.gz: corrupt or truncated"):
        data.extract(folder, tmp_path / "out")


def test_missing_outcomes_file_is_an_error_naming_it(fixture_dir, tmp_path):
    folder = make_data_dir(tmp_path, fixture_dir)
    (folder / "Outcomes-b.txt").unlink()
    with pytest.raises(data.PhysioNetError, match="Outcomes-b.txt"):
        data.extract(folder, tmp_path / "out")


def test_stays_without_outcome_are_dropped_counted_and_logged(fixture_dir, tmp_path, caplog):
    victims = [int(Path(n).stem) for n in sorted(read_archive(fixture_dir / "set-a.tar.gz"))[:2]]
    folder = make_data_dir(tmp_path, fixture_dir, drop_outcomes=victims)
    with caplog.at_level(logging.WARNING, logger="tardiff.data"):
        arrays, manifest = run(folder, tmp_path)
    assert len(arrays["set-a"]["record_id"]) == 58 and not set(victims) & set(arrays["set-a"]["record_id"])
    assert manifest["drops"]["set-a"]["no_outcome"]["count"] == 2
    assert str(victims[0]) in caplog.text and "no_outcome" in caplog.text


def test_outcomes_without_a_stay_are_counted(fixture_dir, tmp_path, caplog):
    folder = make_data_dir(tmp_path, fixture_dir, outcomes=["999991,1,1,3,-1,0", "999992,1,1,3,-1,1"])
    with caplog.at_level(logging.WARNING, logger="tardiff.data"):
        _, manifest = run(folder, tmp_path)
    assert manifest["sets"]["set-a"]["outcomes_without_stay"]["count"] == 2
    assert "999991" in caplog.text


def test_non_numeric_values_are_dropped_counted_per_parameter_and_logged(fixture_dir, tmp_path, caplog):
    rows = GOOD + ["01:00,HR,abc", "01:00,Temp,", "02:00,HR,75"]
    folder = make_data_dir(tmp_path, fixture_dir, add={"set-a/900004.txt": stay_file(900004, rows)},
                           outcomes=["900004,1,1,3,-1,0"])
    with caplog.at_level(logging.WARNING, logger="tardiff.data"):
        arrays, manifest = run(folder, tmp_path)
    x = arrays["set-a"]["X_raw"][arrays["set-a"]["record_id"] == 900004][0]
    assert np.isnan(x[1, 0]) and x[2, 0] == 75
    assert manifest["sets"]["set-a"]["non_numeric"] == {"HR": 1, "Temp": 1}
    assert manifest["drops"]["set-a"]["non_numeric_value"]["count"] == 2
    assert "set-a/900004.txt" in caplog.text


def test_duplicated_record_ids_drop_every_copy_and_name_them(fixture_dir, tmp_path, caplog):
    folder = make_data_dir(tmp_path, fixture_dir, outcomes=["900005,1,1,3,-1,0"],
                           add={"set-a/900005.txt": stay_file(900005, GOOD),
                                "set-a/900005-copy.txt": stay_file(900005, GOOD[:3])})
    with caplog.at_level(logging.WARNING, logger="tardiff.data"):
        arrays, manifest = run(folder, tmp_path)
    assert 900005 not in arrays["set-a"]["record_id"] and len(arrays["set-a"]["record_id"]) == 60
    assert manifest["drops"]["set-a"]["duplicate_record_id"]["count"] == 2
    assert "900005-copy.txt" in caplog.text


def test_ambiguous_outcomes_and_record_ids_shared_across_sets_are_dropped(fixture_dir, tmp_path):
    a_ids = sorted(int(Path(n).stem) for n in read_archive(fixture_dir / "set-a.tar.gz"))
    b_files = read_archive(fixture_dir / "set-b.tar.gz")
    b_id = int(Path(sorted(b_files)[0]).stem)
    folder = make_data_dir(tmp_path, fixture_dir, add={"set-a/moved.txt": b_files[sorted(b_files)[0]]},
                           outcomes=[f"{a_ids[0]},1,1,3,-1,1", f"{b_id},1,1,3,-1,0",
                                     f"{a_ids[1]},1,1,3,-1,7"],
                           drop_outcomes=[a_ids[1]])  # a_ids[0]: two rows; a_ids[1]: label 7
    arrays, manifest = run(folder, tmp_path)
    drops = manifest["drops"]
    assert drops["set-a"]["duplicate_outcome"]["examples"] == [a_ids[0]]
    assert drops["set-a"]["bad_outcome"]["examples"] == [a_ids[1]]
    assert drops["set-b"]["record_id_in_earlier_set"]["examples"] == [b_id]
    assert b_id in arrays["set-a"]["record_id"] and b_id not in arrays["set-b"]["record_id"]


def test_empty_files_are_dropped_counted_and_named(fixture_dir, tmp_path, caplog):
    folder = make_data_dir(tmp_path, fixture_dir, add={"set-a/900006.txt": b"",
                                                       "set-a/900007.txt": b"Time,Parameter,Value\n"})
    with caplog.at_level(logging.WARNING, logger="tardiff.data"):
        arrays, manifest = run(folder, tmp_path)
    assert len(arrays["set-a"]["record_id"]) == 60
    assert manifest["drops"]["set-a"]["empty_file"]["count"] == 2
    assert "set-a/900006.txt" in caplog.text


@pytest.mark.parametrize("bad,n_malformed", [
    (["01:00,HR,70,extra", "garbage"], 2),  # comma count off
    (["01:00,HR,70,5", "01:10,HR"], 2),     # comma count balanced within the file
    (['01:00,"HR,70', '01:10,HR,"7'], 0),   # stray quotes: 3 fields each, must not swallow lines
])
def test_malformed_lines_are_dropped_and_counted(fixture_dir, tmp_path, bad, n_malformed):
    rows = GOOD + bad + ["02:00,HR,75"]
    folder = make_data_dir(tmp_path, fixture_dir, add={"set-a/900008.txt": stay_file(900008, rows)},
                           outcomes=["900008,1,1,3,-1,0"])
    arrays, manifest = run(folder, tmp_path)
    x = arrays["set-a"]["X_raw"][arrays["set-a"]["record_id"] == 900008][0]
    assert np.isnan(x[1, 0]) and x[2, 0] == 75
    assert manifest["drops"]["set-a"].get("malformed_line", {"count": 0})["count"] == n_malformed


def test_data_dir_with_nothing_usable_is_an_error_listing_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(data.PhysioNetError, match=r"set-\*\.tar\.gz.*found \['notes.txt'\]"):
        data.extract(tmp_path, tmp_path / "out")


def test_archive_with_only_empty_files_is_an_error(fixture_dir, tmp_path):
    folder = make_data_dir(tmp_path, fixture_dir)
    write_archive(folder / "set-b.tar.gz", {"set-b/1.txt": b"", "set-b/2.txt": b""})
    with pytest.raises(data.PhysioNetError, match="set-b.tar.gz: nothing usable"):
        data.extract(folder, tmp_path / "out")


# ----------------------------------------------------------------------------------------- locating data


def test_failed_download_says_which_files_to_place_where(tmp_path, monkeypatch):
    monkeypatch.delenv("TARDIFF_DATA_DIR", raising=False)
    monkeypatch.setenv("TARDIFF_CACHE_DIR", str(tmp_path / "cache"))

    def offline(url, dest):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data, "download", offline)
    with pytest.raises(data.PhysioNetError) as error:
        data.resolve_data_dir()
    folder = tmp_path / "cache" / "physionet2012"
    for name in ("set-a.tar.gz", "set-b.tar.gz", "Outcomes-a.txt", "Outcomes-b.txt"):
        assert str(folder / name) in str(error.value)
    assert "--data-dir" in str(error.value) and "TARDIFF_DATA_DIR" in str(error.value)


def test_data_dir_argument_then_environment(fixture_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TARDIFF_DATA_DIR", str(tmp_path))
    assert data.resolve_data_dir() == tmp_path
    assert data.resolve_data_dir(fixture_dir) == fixture_dir
    with pytest.raises(data.PhysioNetError, match="does not exist"):
        data.resolve_data_dir(tmp_path / "nowhere")


def test_command_line_writes_outputs_and_reports_errors(fixture_dir, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert cli(["extract", "--data-dir", str(fixture_dir), "--out", out, "--seed", "2"]) == 0
    assert (tmp_path / "out" / "set-a.npz").exists() and (tmp_path / "out" / "set-b.npz").exists()
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["config"]["seed"] == 2
    assert cli(["extract", "--data-dir", str(tmp_path / "out"), "--out", str(tmp_path / "o2")]) == 1


# ----------------------------------------------------------------------------------------- full data


@pytest.fixture(scope="module")
def full(physionet_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    paths = data.extract(physionet_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    return {name: stays.load_stays(p) for name, p in paths.items()}, manifest


@pytest.mark.integration
def test_full_extraction_counts_rates_and_shapes(full):
    arrays, manifest = full
    for name, rate in (("set-a", 0.1385), ("set-b", 0.1420)):
        arr = arrays[name]
        dropped = sum(d["count"] for reason, d in manifest["drops"][name].items()
                      if reason in {"empty_file", "bad_header", "no_record_id", "duplicate_record_id",
                                    "record_id_in_earlier_set", "duplicate_outcome", "bad_outcome",
                                    "no_outcome"})
        n = len(arr["record_id"])
        assert n == 4000 - dropped
        assert arr["X"].shape == arr["X_raw"].shape == (n, 24, 8)
        assert round(float(arr["y_mortality"].mean()), 3) == pytest.approx(rate, abs=1e-3)
        assert np.isfinite(arr["X"]).all() and np.array_equal(arr["mask"], ~np.isnan(arr["X_raw"]))
    assert (arrays["set-a"]["split"] == "val").sum() == pytest.approx(400, abs=1)


@pytest.mark.integration
@pytest.mark.parametrize("name,record_id", [("set-a", 132539), ("set-a", 132577), ("set-b", 142675)])
def test_hand_picked_stays_hourly_hr_equals_their_text_file(full, physionet_dir, name, record_id):
    with tarfile.open(physionet_dir / f"{name}.tar.gz", "r:gz") as tar:
        text = tar.extractfile(f"{name}/{record_id}.txt").read().decode()
    hr = {}
    for line in text.splitlines()[1:]:
        time, parameter, value = line.split(",")
        if parameter == "HR" and int(time[:2]) < 24 and 10 <= float(value) <= 300:
            hr.setdefault(int(time[:2]), []).append(float(value))
    expected = np.array([np.mean(hr[h]) if h in hr else np.nan for h in range(24)])
    arr = full[0][name]
    np.testing.assert_allclose(arr["X_raw"][arr["record_id"] == record_id][0, :, 0], expected,
                               rtol=1e-5, equal_nan=True)
