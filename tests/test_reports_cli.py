"""`radpair sections` and `radpair label` on good and bad input."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from radpair_train.cli import main


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def report_csv(tmp_path):
    path = tmp_path / "reports.csv"
    pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "report": [
                "FINDINGS: Small left pleural effusion.\nIMPRESSION: Effusion.",
                "",
                "INDICATION: ?pneumonia\n\nFINDINGS: No consolidation.\n\nIMPRESSION: Normal.",
            ],
        }
    ).to_csv(path, index=False)
    return path


def test_label_csv(tmp_path, report_csv, capsys):
    out = tmp_path / "labels.csv"
    code, _, err = run(["label", "--schema", "chestxray14", str(report_csv), "-o", str(out), "--explain"], capsys)
    assert code == 0, err
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df["id"]) == ["a", "b", "c"]
    assert df.columns[1] == "Atelectasis" and "evidence" in df.columns
    assert df.loc[0, "Effusion"] == "1" and df.loc[2, "Consolidation"] == "0"
    assert df.loc[2, "Pneumonia"] == ""  # the indication is not read
    assert (df.loc[1].drop("id") == "").all()  # empty report: blank labels, row kept
    assert "'effusion'" in df.loc[0, "evidence"]


def test_sections_csv(tmp_path, report_csv, capsys):
    out = tmp_path / "sections.csv"
    code, _, err = run(["sections", str(report_csv), "-o", str(out), "--policy", "findings+impression"], capsys)
    assert code == 0, err
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df["id"]) == ["a", "b", "c"]
    assert df.loc[2, "indication"] == "?pneumonia" and df.loc[2, "impression"] == "Normal."
    assert df.loc[0, "selected_findings+impression"] == "Small left pleural effusion.\n\nEffusion."
    assert {"findings", "impression", "last_paragraph", "layout"} <= set(df.columns)


def test_csv_without_text_column_names_the_columns(tmp_path, capsys):
    path = tmp_path / "iu.csv"
    pd.DataFrame({"uid": [1], "findings": ["No effusion."], "impression": ["Normal."]}).to_csv(path, index=False)
    code, _, err = run(["label", "--schema", "edema", str(path), "-o", str(tmp_path / "o.csv")], capsys)
    assert code == 2
    assert "no column 'report'" in err and "columns found: uid, findings, impression" in err
    assert "--text-column" in err
    code, _, err = run(["sections", str(path), "-o", str(tmp_path / "o.csv"), "--text-column", "findings", "--id-column", "study"], capsys)
    assert code == 2 and "no id column 'study'" in err and "uid, findings, impression" in err
    # several text columns, and row numbers when there is no id column
    out = tmp_path / "o.csv"
    code, _, err = run(["label", "--schema", "chestxray14", str(path), "--text-column", "findings,impression", "-o", str(out)], capsys)
    assert code == 0 and "using row numbers" in err
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df["row"]) == ["0"] and df.loc[0, "Effusion"] == "0"


def test_folder_with_unreadable_files_goes_on(tmp_path, capsys):
    folder = tmp_path / "reports"
    (folder / "nested").mkdir(parents=True)
    (folder / "good.txt").write_text("FINDINGS: Large right pleural effusion.")
    (folder / "nested" / "deep.txt").write_text("IMPRESSION: No pneumothorax.")
    (folder / "latin1.txt").write_bytes("FINDINGS: Effusion \xe9 noted.".encode("latin-1"))
    (folder / "dir.txt").mkdir()
    os.symlink(folder / "missing-target", folder / "broken.txt")
    out = tmp_path / "labels.csv"
    code, _, err = run(["label", "--schema", "chestxray14", str(folder), "-o", str(out)], capsys)
    assert code == 0
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert sorted(df["id"]) == ["broken", "dir", "good", "latin1", "nested/deep"]  # every input id
    row = df.set_index("id")
    assert row.loc["good", "Effusion"] == "1" and row.loc["nested/deep", "Pneumothorax"] == "0"
    assert row.loc["latin1", "Effusion"] == "1"  # decoded with a replacement character, and reported
    assert (row.loc["broken"] == "").all() and (row.loc["dir"] == "").all()
    assert "3 input problem(s)" in err
    assert "broken.txt: No such file or directory" in err
    assert "dir.txt: is a directory" in err
    assert "latin1.txt: not valid UTF-8" in err
    code, _, _ = run(["sections", str(folder), "-o", str(tmp_path / "s.csv"), "--strict"], capsys)
    assert code == 1
    assert len(pd.read_csv(tmp_path / "s.csv")) == 5


def test_bad_arguments_fail_before_reading(tmp_path, capsys):
    code, _, err = run(["label", "--schema", "chexpret", "nothing.csv", "-o", "x.csv"], capsys)
    assert code == 2 and "did you mean 'chexpert'" in err
    code, _, err = run(["label", "--schema", "chexpert", "--phrases-dir", str(tmp_path / "nope"), "x.csv", "-o", "x.csv"], capsys)
    assert code == 2 and str(tmp_path / "nope") in err
    code, _, err = run(["sections", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "o.csv")], capsys)
    assert code == 2 and "no such file or folder" in err
    (tmp_path / "r.csv").write_text("id,report\n1,No effusion.\n")
    code, _, err = run(["label", "--schema", "edema", str(tmp_path / "r.csv"), "-o", str(tmp_path / "no" / "o.csv")], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = run(["label", "--schema", "edema", str(tmp_path / "r.csv"), "-o", "-", "--sections", "findngs"], capsys)
    assert code == 2 and "did you mean 'findings'" in err


def test_label_to_stdout_edema(tmp_path, capsys):
    (tmp_path / "r.csv").write_text('id,report\n1,"IMPRESSION: Interstitial edema."\n2,No pulmonary edema.\n')
    code, out, _ = run(["label", "--schema", "edema", str(tmp_path / "r.csv"), "-o", "-"], capsys)
    assert code == 0
    assert out.splitlines() == ["id,edema_severity", "1,2", "2,0"]
