"""Bad input a new user would try, built from the vendored fixtures: each is a clear error naming the file or
option, or a counted drop; a failing run never destroys an earlier good output."""
import shutil

import numpy as np
import pytest

from tardiff import data


@pytest.fixture
def archives(tmp_path, fixture_dir):
    folder = tmp_path / "archives"
    shutil.copytree(fixture_dir, folder, ignore=shutil.ignore_patterns("*.py"))
    return folder


def flip_byte(path, where=0.5):
    blob = bytearray(path.read_bytes())
    blob[int(len(blob) * where)] ^= 0xFF
    path.write_bytes(bytes(blob))


def test_a_flipped_byte_in_an_archive_is_an_error_and_keeps_the_good_output(archives, tmp_path):
    out = tmp_path / "out"
    good = data.extract(archives, out)
    before = {name: path.read_bytes() for name, path in good.items()}
    flip_byte(archives / "set-a.tar.gz")
    with pytest.raises(data.PhysioNetError, match="set-a.tar.gz.*download it again"):
        data.extract(archives, out)
    assert {name: path.read_bytes() for name, path in good.items()} == before


def test_outcomes_rows_without_stays_beyond_a_threshold_are_an_error(archives, tmp_path):
    import tarfile

    source = archives / "set-a.tar.gz"
    with tarfile.open(source, "r:gz") as archive:
        members = [(m, archive.extractfile(m).read() if m.isfile() else None) for m in archive.getmembers()]
    keep = members[: len(members) // 2]  # half the stay files: a truncated download repacked
    with tarfile.open(source, "w:gz") as archive:
        for member, body in keep:
            import io

            archive.addfile(member, io.BytesIO(body) if body is not None else None)
    with pytest.raises(data.PhysioNetError, match="Outcomes-a.txt have no stay file"):
        data.extract(archives, tmp_path / "out")


def test_reuse_checks_output_checksums_not_existence(archives, tmp_path):
    out = tmp_path / "out"
    written = data.extract(archives, out)
    whole = written["set-b"].read_bytes()
    written["set-b"].write_bytes(whole[: len(whole) // 2])  # truncated
    again = data.extract(archives, out)
    assert again["set-b"].read_bytes() == whole  # re-extracted, not "reused"


@pytest.mark.parametrize("make, message", [
    (lambda out: out.write_text("a file"), "is a file"),
    (lambda out: (out / "set-a.npz").mkdir(parents=True), "is a folder"),
])
def test_bad_output_locations_fail_before_any_work(archives, tmp_path, make, message):
    out = tmp_path / "out"
    make(out)
    with pytest.raises(data.PhysioNetError, match=message):
        data.extract(archives, out)


def test_extract_command_logs_one_line_not_a_traceback(archives, tmp_path, caplog):
    from tardiff.__main__ import main

    flip_byte(archives / "set-b.tar.gz")
    assert main(["extract", "--data-dir", str(archives), "--out", str(tmp_path / "out")]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "set-b.tar.gz" in errors[0] and "download it again" in errors[0]


def test_extractor_tables_empty_truncated_or_with_text_in_numbers_name_the_file(tmp_path):
    import gzip

    from data_preprocess.common import read_table

    empty = tmp_path / "EMPTY.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="EMPTY.csv: the table is empty"):
        read_table(empty, ["a"])
    truncated = tmp_path / "CUT.csv.gz"
    truncated.write_bytes(gzip.compress(b"a,b\n" + b"1,2\n" * 5000)[:-40])
    with pytest.raises(ValueError, match="CUT.csv.gz"):
        read_table(truncated, ["a", "b"])
    text = tmp_path / "TEXT.csv"
    text.write_text("icustay_id,valuenum\n1,2.5\n2,abc\n")
    with pytest.raises(ValueError, match=r"TEXT.csv.*valuenum \(float64\)"):
        read_table(text, ["icustay_id", "valuenum"], dtype={"valuenum": "float64"})


def test_extractor_command_line_exits_with_one_line(tmp_path):
    from data_preprocess import mimic3

    with pytest.raises(SystemExit) as error:
        mimic3.main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "o.npz")])
    assert "mimic3" in str(error.value) and "Traceback" not in str(error.value)


def test_a_data_folder_with_set_a_only_says_set_b_is_missing(archives, tmp_path):
    from tardiff import real_data
    from tardiff.config import get_profile

    (archives / "set-b.tar.gz").unlink()
    (archives / "Outcomes-b.txt").unlink()
    data.extract(archives, tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="no set-b.npz.*lacks set-b.tar.gz"):
        real_data.load_real(tmp_path / "data", "mortality", get_profile("smoke"))


@pytest.mark.parametrize("name, make, message", [
    ("a.npy", lambda p: np.save(p, np.zeros((3, 4, 2))), "not an .npz"),
    ("empty.npz", lambda p: p.write_bytes(b""), "not a readable .npz"),
    ("cut.npz", lambda p: (np.savez(p, X=np.zeros((50, 24, 8)), y=np.zeros(50)),
                           p.write_bytes(p.read_bytes()[:-300])), "npz"),
    ("pickled.npz", lambda p: np.savez(p, X=np.array([{"a": 1}], dtype=object), y=np.zeros(1)), "pickled"),
])
def test_own_dataset_files_for_the_batch_get_one_line_errors(tmp_path, name, make, message):
    from tardiff import real_data, stays
    from tardiff.config import get_profile

    path = tmp_path / name
    make(path)
    with pytest.raises(stays.StayFormatError, match=message) as error:
        real_data.load_real(path, "label", get_profile("smoke"))
    assert name in str(error.value) and "allow_pickle" not in str(error.value)


@pytest.mark.parametrize("fraction", [0.001, 0.999])
def test_a_validation_fraction_without_both_outcomes_or_training_stays_names_the_option(archives, tmp_path,
                                                                                         fraction):
    with pytest.raises(data.PhysioNetError, match="--val-fraction"):
        data.extract(archives, tmp_path / "out", val_fraction=fraction)


def test_impossible_minutes_late_rows_and_quoted_names_are_counted(tmp_path):
    folder = tmp_path / "set-a"
    folder.mkdir()
    rows = ["Time,Parameter,Value", "00:00,RecordID,1", "00:30,HR,80", "00:75,HR,90", "30:00,HR,70",
            '01:00,"HR",85', "01:10, HR ,86"]
    (folder / "1.txt").write_text("\n".join(rows) + "\n")
    (tmp_path / "Outcomes-a.txt").write_text(
        "RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n1,1,1,5,-1,0\n")
    arrays, report = data.extract_set(folder, tmp_path / "Outcomes-a.txt", hours=24)
    assert report["drops"]["bad_time"]["count"] == 1            # 00:75 is not read as 01:15
    assert report["rows_after_window"] == 1                      # 30:00 with a 24 h window
    assert report["rows_with_padded_or_quoted_channel_name"] == 2
    hr = arrays["X_raw"][0, :, 0]
    assert hr[0] == 80 and np.isnan(hr[1])                       # nothing landed in hour 1


def _mimic(tmp_path, edit_table=None, edit=None):
    import pandas as pd

    from tests.test_extractors import write_mimic3

    folder = write_mimic3(tmp_path / "mimic")
    if edit_table:
        path = folder / f"{edit_table}.csv"
        pd.DataFrame(edit(pd.read_csv(path))).to_csv(path, index=False)
    return folder


@pytest.mark.parametrize("table, edit, message", [
    ("ICUSTAYS", lambda t: pd_concat(t, t.iloc[:1]), "ICUSTAYS.csv: icustay_id 1001 appears more than once"),
    ("ADMISSIONS", lambda t: t.assign(HOSPITAL_EXPIRE_FLAG="yes"), "ICUSTAYS.csv: no stay left.*hospital_expire_flag"),
    ("ICUSTAYS", lambda t: t.iloc[:0], "ICUSTAYS.csv: no stay left"),
])
def test_mimic3_stay_tables_that_cannot_work_name_table_and_column(tmp_path, table, edit, message):
    from data_preprocess import mimic3

    folder = _mimic(tmp_path, table, edit)
    with pytest.raises(SystemExit, match=message):
        mimic3.main(["--data-dir", str(folder), "--out", str(tmp_path / "o.npz")])


def pd_concat(*frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def test_one_text_cell_in_a_numeric_column_is_counted_not_fatal(tmp_path):
    from data_preprocess import mimic3

    def text_in_valuenum(table):
        table = table.astype({"VALUENUM": object})
        table.loc[3, "VALUENUM"] = "abc"
        return table

    folder = _mimic(tmp_path, "CHARTEVENTS", text_in_valuenum)
    clean = _mimic(tmp_path / "clean")
    arrays, manifest = mimic3.extract_mimic3(folder, tmp_path / "o.npz", chunksize=2, quiet=True)
    reference, _ = mimic3.extract_mimic3(clean, tmp_path / "c.npz", chunksize=2, quiet=True)
    assert manifest["counts"]["chartevents"]["rows_not_a_number"] == {"valuenum": 1}
    changed = ~np.isclose(arrays["X_raw"], reference["X_raw"], equal_nan=True)
    assert changed.sum() <= 1  # only the hour that lost its one value can differ


@pytest.mark.parametrize("out, extra, message", [
    ("folder.npz/", [], "is a folder"),
    ("afile/o.npz", [], "is a file, not a folder"),
    ("o.csv", [], "name an .npz"),
    ("o.npz", ["--hours", "0"], "--hours"),
])
def test_extractor_output_and_options_are_checked_before_reading(tmp_path, out, extra, message):
    from data_preprocess import mimic3

    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit, match=message):
        mimic3.main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / out), *extra])


def test_an_outcomes_file_that_is_a_folder_is_a_one_line_error(archives, tmp_path, caplog):
    (archives / "Outcomes-a.txt").unlink()
    (archives / "Outcomes-a.txt").mkdir()
    with pytest.raises(data.PhysioNetError, match="Outcomes-a.txt is a folder, not the outcomes table"):
        data.extract(archives, tmp_path / "out")
    from tardiff.__main__ import main

    assert main(["extract", "--data-dir", str(archives), "--out", str(tmp_path / "out2")]) != 0
    assert "is a folder" in caplog.text


def test_a_mimic_table_as_both_csv_and_csv_gz_is_said_or_refused(tmp_path):
    import gzip

    from data_preprocess.common import find_table

    body = b"icustay_id,intime\n1,2101-01-01 00:00:00\n"
    (tmp_path / "ICUSTAYS.csv").write_bytes(body)
    (tmp_path / "ICUSTAYS.csv.gz").write_bytes(gzip.compress(body))
    with pytest.warns(UserWarning, match="both ICUSTAYS.csv and ICUSTAYS.csv.gz .* reading ICUSTAYS.csv"):
        assert find_table(tmp_path, "ICUSTAYS", "MIMIC-III") == tmp_path / "ICUSTAYS.csv"
    (tmp_path / "ICUSTAYS.csv.gz").write_bytes(gzip.compress(body + b"2,2101-01-02 00:00:00\n"))
    with pytest.raises(ValueError, match="twice, as ICUSTAYS.csv and ICUSTAYS.csv.gz, and they differ"):
        find_table(tmp_path, "ICUSTAYS", "MIMIC-III")
