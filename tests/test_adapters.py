"""Dataset adapters: miniature copies of each layout, views, labels, splits, leak checks."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from radpair.data.adapters import (
    ADAPTERS,
    CHEXPERT_LABELS,
    RECORD_COLUMNS,
    AdapterOptions,
    SplitSpec,
    build_index,
    check_patient_splits,
    hashed_split,
)
from radpair.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not available")

# ----------------------------------------------------------------- miniature MIMIC-CXR-JPG

# (subject, study, dicom, ViewPosition, official split)
MIMIC_IMAGES = [
    ("10000032", "50414267", "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA", "train"),
    ("10000032", "50414267", "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL", "train"),
    ("10000032", "53189527", "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "AP", "train"),
    ("10000764", "57375967", "096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "AP", "validate"),
    ("10000764", "57375967", "b79e55c3-735ce5ac-64412506-cdc9ea79-f1af521f", "LL", "validate"),
    ("10000898", "50771383", "6ad03ed1-97ee17ee-9cf8b320-f7011003-cd93b42d", "PA", "test"),
    ("10000898", "50771383", "e7f21453-7956d79a-44e2d2a5-2b8b6d0c-7f7e4d04", "", "test"),
]
MIMIC_REPORTS = {
    ("10000032", "50414267"): "                                 FINAL REPORT\r\n EXAMINATION:  CHEST (PA AND LAT)\r\n \r\n"
    " INDICATION:  Cough.\r\n \r\n FINDINGS:  No focal consolidation.\r\n \r\n IMPRESSION:  No acute process.\r\n",
    ("10000032", "53189527"): " FINDINGS:  Mild pulmonary edema.\n IMPRESSION:  Edema.\n",
    ("10000764", "57375967"): " IMPRESSION:  Possible left lower lobe pneumonia.\n",
    # 10000898/50771383 deliberately has no report
}


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", newline="") as fh:
            df.to_csv(fh, index=False)
    else:
        df.to_csv(path, index=False)


def make_mimic_jpg(root: Path, reports: str = "zip", images: bool = True, size: int = 40) -> Path:
    """MIMIC-CXR-JPG layout: files/ tree, metadata (.gz), split (.csv), chexpert (.gz), negbio."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    meta = pd.DataFrame(
        {
            "dicom_id": [r[2] for r in MIMIC_IMAGES],
            "subject_id": [r[0] for r in MIMIC_IMAGES],
            "study_id": [r[1] for r in MIMIC_IMAGES],
            "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
            "ViewPosition": [r[3] for r in MIMIC_IMAGES],
            "Rows": 3056,
            "Columns": 2544,
        }
    )
    _write_csv(meta, root / "mimic-cxr-2.0.0-metadata.csv.gz")
    split = pd.DataFrame({"dicom_id": meta["dicom_id"], "study_id": meta["study_id"], "subject_id": meta["subject_id"], "split": [r[4] for r in MIMIC_IMAGES]})
    _write_csv(split, root / "mimic-cxr-2.0.0-split.csv")
    studies = meta[["subject_id", "study_id"]].drop_duplicates().reset_index(drop=True)
    labels = studies.copy()
    for j, name in enumerate(CHEXPERT_LABELS):
        labels[name] = [[1.0, 0.0, -1.0, np.nan][(i + j) % 4] for i in range(len(studies))]
    _write_csv(labels, root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    _write_csv(labels.fillna(0.0), root / "mimic-cxr-2.0.0-negbio.csv")
    if images:
        for subject, study, dicom, _, _ in MIMIC_IMAGES:
            folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
            folder.mkdir(parents=True, exist_ok=True)
            arr = rng.integers(0, 256, (size + 8, size), dtype=np.uint8)
            Image.fromarray(arr).save(folder / f"{dicom}.jpg", quality=90)
    if reports == "zip":
        with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w") as zf:
            for (subject, study), text in MIMIC_REPORTS.items():
                zf.writestr(f"files/p{subject[:2]}/p{subject}/s{study}.txt", text)
    elif reports == "tree":
        for (subject, study), text in MIMIC_REPORTS.items():
            path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text.encode())
    return root


def test_registry_lists_every_dataset_and_suggests_names():
    assert {"mimic_cxr_jpg", "mimic_cxr_dicom", "mimic_cxr_edema", "chexpert", "iu_xray", "chestxray14", "folder", "covid", "generic_csv"} <= set(ADAPTERS.names())
    with pytest.raises(ConfigError, match="did you mean 'chexpert'"):
        build_index("chexpret", ".")


@pytest.mark.parametrize("reports", ["zip", "tree"])
def test_mimic_cxr_jpg(tmp_path, reports):
    root = make_mimic_jpg(tmp_path / "mimic", reports=reports, images=False)
    index = build_index("mimic_cxr_jpg", root)
    t = index.table
    assert list(t.columns[: len(RECORD_COLUMNS)]) == RECORD_COLUMNS
    assert index.label_columns == CHEXPERT_LABELS
    assert sorted(t["view"]) == ["AP", "AP", "PA", "PA"]  # frontal only: lateral, LL and blank dropped
    assert index.split.source == "official" and set(t["split"]) == {"train", "val", "test"}
    first = t[t["image_id"] == MIMIC_IMAGES[0][2]].iloc[0]
    assert first["path"] == f"files/p10/p10000032/s50414267/{MIMIC_IMAGES[0][2]}.jpg"
    assert first["patient_id"] == "10000032" and first["study_id"] == "50414267"
    assert first["report"].startswith("FINAL REPORT\n EXAMINATION:") and "\r" not in first["report"]
    assert "IMPRESSION:  No acute process." in first["report"]
    assert t.loc[t["patient_id"] == "10000898", "report"].eq("").all()
    assert any("no report" in n for n in index.notes)
    assert set(np.unique(t[CHEXPERT_LABELS].to_numpy()[~np.isnan(t[CHEXPERT_LABELS].to_numpy())])) == {-1.0, 0.0, 1.0}
    everything = build_index("mimic_cxr_jpg", root, AdapterOptions(views="all"))
    assert len(everything) == len(MIMIC_IMAGES)


@pytest.mark.parametrize("policy, expected", [("zeros", {0.0, 1.0}), ("ones", {0.0, 1.0}), ("ignore", {0.0, 1.0}), ("keep", {-1.0, 0.0, 1.0})])
def test_uncertainty_policies(tmp_path, policy, expected):
    root = make_mimic_jpg(tmp_path / "mimic", images=False)
    keep = build_index("mimic_cxr_jpg", root).table[CHEXPERT_LABELS].to_numpy()
    t = build_index("mimic_cxr_jpg", root, AdapterOptions(uncertainty=policy)).table[CHEXPERT_LABELS].to_numpy()
    assert set(np.unique(t[~np.isnan(t)])) == expected
    uncertain = keep == -1
    if policy == "zeros":
        assert (t[uncertain] == 0).all()
    elif policy == "ones":
        assert (t[uncertain] == 1).all()
    elif policy == "ignore":
        assert np.isnan(t[uncertain]).all()
    assert np.array_equal(np.isnan(t[~uncertain]), np.isnan(keep[~uncertain]))


def test_mimic_negbio_labels_and_option_checks(tmp_path):
    root = make_mimic_jpg(tmp_path / "mimic", images=False)
    index = build_index("mimic_cxr_jpg", root, AdapterOptions(label_source="negbio"))
    assert not np.isnan(index.table[CHEXPERT_LABELS].to_numpy()).any()
    with pytest.raises(ConfigError, match="did you mean 'negbio'"):
        build_index("mimic_cxr_jpg", root, AdapterOptions(label_source="negbo"))
    with pytest.raises(ConfigError, match="image_column"):
        build_index("mimic_cxr_jpg", root, AdapterOptions(image_column="Path"))


def test_mimic_edema_join(tmp_path):
    root = make_mimic_jpg(tmp_path / "mimic", images=False)
    edema = tmp_path / "edema"
    edema.mkdir()
    pd.DataFrame({"subject_id": ["10000032", "10000764"], "study_id": ["50414267", "57375967"], "edema_severity": [0, 2]}).to_csv(
        edema / "regex_report_edema_severity.csv", index=False
    )
    pd.DataFrame({"subject_id": ["10000032"], "study_id": ["53189527"], "edema_severity": [3]}).to_csv(
        edema / "expert_report_edema_severity.csv", index=False
    )
    pd.DataFrame(
        {"subject_id": ["10000898"], "study_id": ["50771383"], "dicom_id": [MIMIC_IMAGES[5][2]], "edema_severity": [1]}
    ).to_csv(edema / "consensus_image_edema_severity.csv", index=False)
    index = build_index("mimic_cxr_jpg", root, AdapterOptions(edema_root=str(edema)))
    cols = ["edema_severity_regex", "edema_severity_expert", "edema_severity_consensus"]
    assert index.label_columns[-3:] == cols
    t = index.table.set_index("image_id")
    assert t.loc[MIMIC_IMAGES[0][2], "edema_severity_regex"] == 0
    assert t.loc[MIMIC_IMAGES[3][2], "edema_severity_regex"] == 2
    assert t.loc[MIMIC_IMAGES[2][2], "edema_severity_expert"] == 3
    assert t.loc[MIMIC_IMAGES[5][2], "edema_severity_consensus"] == 1
    graded = build_index("mimic_cxr_edema", root, AdapterOptions(edema_root=str(edema)))
    assert len(graded) == 4  # every frontal image with a grade from some source


def test_mimic_cxr_dicom_with_reports_and_header_views(tmp_path):
    from test_data_io import phantom, write_dicom

    root = tmp_path / "mimic-cxr"
    rows = []
    for subject, study, dicom, view, _ in MIMIC_IMAGES[:4]:
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        write_dicom(folder / f"{dicom}.dcm", phantom(16, 16), view=view or None)
        rows.append((subject, study, dicom, f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.dcm"))
    for (subject, study), text in MIMIC_REPORTS.items():
        (root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt").write_text(text)
    index = build_index("mimic_cxr_dicom", root)  # no record list, no metadata: walk + headers
    assert sorted(index.table["view"]) == ["AP", "AP", "PA"]
    assert index.split.source == "hashed"
    assert index.table["report"].str.contains("IMPRESSION").all()
    pd.DataFrame(rows, columns=["subject_id", "study_id", "dicom_id", "path"]).to_csv(root / "cxr-record-list.csv.gz", index=False)
    jpg_meta = make_mimic_jpg(tmp_path / "jpg", reports="none", images=False)
    with_meta = build_index("mimic_cxr_dicom", root, AdapterOptions(metadata_root=str(jpg_meta)))
    assert with_meta.split.source == "official" and with_meta.label_columns == CHEXPERT_LABELS
    assert with_meta.table["path"].str.endswith(".dcm").all()


# ----------------------------------------------------------------- CheXpert


def make_chexpert(root: Path) -> Path:
    data = root / "CheXpert-v1.0-small"
    data.mkdir(parents=True)
    base = {"Sex": "Male", "Age": "60"}
    rows = []
    for p in range(1, 5):
        rows.append({"Path": f"CheXpert-v1.0-small/train/patient{p:05d}/study1/view1_frontal.jpg", **base, "Frontal/Lateral": "Frontal", "AP/PA": "AP" if p % 2 else "PA"})
        rows.append({"Path": f"CheXpert-v1.0-small/train/patient{p:05d}/study1/view2_lateral.jpg", **base, "Frontal/Lateral": "Lateral", "AP/PA": ""})
    train = pd.DataFrame(rows)
    for j, name in enumerate(CHEXPERT_LABELS):
        train[name] = [["1.0", "0.0", "-1.0", ""][(i + j) % 4] for i in range(len(train))]
    train.to_csv(data / "train.csv", index=False)
    valid = train.iloc[:2].copy()
    valid["Path"] = ["CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "CheXpert-v1.0-small/valid/patient64541/study1/view2_lateral.jpg"]
    valid.to_csv(data / "valid.csv", index=False)
    return data


def test_chexpert_from_parent_or_dataset_folder(tmp_path):
    data = make_chexpert(tmp_path)
    for root in (tmp_path, data):
        index = build_index("chexpert", root, AdapterOptions(uncertainty="zeros"))
        t = index.table
        assert len(t) == 5 and set(t["view"]) == {"AP", "PA"}
        assert set(t["split"]) == {"train", "val"}
        assert index.image_root == tmp_path
        assert (index.image_root / t["path"].iloc[0]).as_posix().endswith("train/patient00001/study1/view1_frontal.jpg")
        assert t["patient_id"].iloc[0] == "patient00001" and t["study_id"].iloc[0] == "patient00001/study1"
        assert -1 not in t[CHEXPERT_LABELS].to_numpy()


# ----------------------------------------------------------------- IU X-ray


@needs_shared
def test_iu_xray_shared_reports():
    index = build_index("iu_xray", SHARED_DATA / "iu_xray")
    t = index.table
    assert len(t) == 3818 and set(t["view"]) == {"FRONTAL"}
    first = t[t["patient_id"] == "CXR1"].iloc[0]
    assert first["report"] == (
        "INDICATION: Positive TB test\n\nCOMPARISON: None.\n\nFINDINGS: The cardiac silhouette and mediastinum size are within "
        "normal limits. There is no pulmonary edema. There is no focal consolidation. There are no XXXX of a pleural effusion. "
        "There is no evidence of pneumothorax.\n\nIMPRESSION: Normal chest x-XXXX."
    )
    from radpair.reports import parse_report, select_sections

    assert parse_report(first["report"]).section("impression") == "Normal chest x-XXXX."
    assert select_sections(first["report"], "findings").startswith("The cardiac silhouette")
    assert (t["report"] == "").sum() == 24  # a few reports of the collection are empty in every section
    check_patient_splits(t)


@needs_shared
def test_iu_xray_r2gen_split_file():
    index = build_index("iu_xray", SHARED_DATA / "iu_xray", AdapterOptions(views="all"), SplitSpec(file=str(SHARED_DATA / "iu_xray" / "r2gen_split.csv")))
    r2gen = pd.read_csv(SHARED_DATA / "iu_xray" / "r2gen_split.csv")
    assert index.split.source == "file" and index.split.dropped_unassigned > 0
    studies = index.table.drop_duplicates("study_id")
    assert studies["study_id"].nunique() == len(r2gen)  # every R2Gen study matched, 'CXR1_1_IM-0001' included
    counts = studies["split"].value_counts().to_dict()
    assert counts == r2gen["split"].value_counts().to_dict()


def test_iu_xray_nlm_xml(tmp_path):
    xml_dir = tmp_path / "ecgen-radiology"
    xml_dir.mkdir()
    (xml_dir / "1.xml").write_text(
        """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR1"/><IUXRId id="1"/><MedlineCitation><Article><Abstract>
<AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="INDICATION">Positive TB test</AbstractText>
<AbstractText Label="FINDINGS">The heart is normal.</AbstractText>
<AbstractText Label="IMPRESSION">Normal chest x-XXXX.</AbstractText>
</Abstract></Article></MedlineCitation>
<parentImage id="CXR1_1_IM-0001-3001"><caption>Xray Chest PA and Lateral</caption></parentImage>
<parentImage id="CXR1_1_IM-0001-4001"><caption>Xray Chest PA and Lateral</caption></parentImage>
</eCitation>"""
    )
    index = build_index("iu_xray", tmp_path, AdapterOptions(views="all"))
    t = index.table
    assert list(t["path"]) == ["CXR1_1_IM-0001-3001.png", "CXR1_1_IM-0001-4001.png"]
    assert t["study_id"].iloc[0] == "CXR1_IM-0001" and t["patient_id"].iloc[0] == "CXR1"
    assert t["report"].iloc[0].splitlines()[0] == "COMPARISON: None."
    with pytest.raises(DataError, match="views all"):
        build_index("iu_xray", tmp_path)  # frontal filter without any view information
    pd.DataFrame({"uid": [1, 1], "filename": ["1_IM-0001-4001.dcm.png", "1_IM-0001-3001.dcm.png"], "projection": ["Frontal", "Lateral"]}).to_csv(
        tmp_path / "indiana_projections.csv", index=False
    )
    frontal = build_index("iu_xray", tmp_path)
    assert list(frontal.table["path"]) == ["CXR1_1_IM-0001-4001.png"]


# ----------------------------------------------------------------- ChestX-ray14, folders, COVID, generic


def test_chestxray14(tmp_path):
    (tmp_path / "images_001" / "images").mkdir(parents=True)
    (tmp_path / "images_002" / "images").mkdir(parents=True)
    names = ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000003_000.png"]
    for i, n in enumerate(names):
        (tmp_path / f"images_00{1 + i // 2}" / "images" / n).write_bytes(b"x")
    pd.DataFrame(
        {
            "Image Index": names,
            "Finding Labels": ["Cardiomegaly|Effusion", "No Finding", "Hernia", "Mass"],
            "Follow-up #": ["0", "1", "0", "0"],
            "Patient ID": ["1", "1", "2", "3"],
            "View Position": ["PA", "AP", "PA", "PA"],
        }
    ).to_csv(tmp_path / "Data_Entry_2017.csv", index=False)
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000002_000.png\n")
    (tmp_path / "test_list.txt").write_text("00000003_000.png\n")
    index = build_index("chestxray14", tmp_path, split=SplitSpec(fractions=(0.5, 0.5, 0.0)))
    t = index.table.set_index("image_id")
    assert t.loc["00000001_000", "path"] == "images_001/images/00000001_000.png"
    assert t.loc["00000002_000", "path"] == "images_002/images/00000002_000.png"
    assert t.loc["00000001_000", ["Cardiomegaly", "Effusion", "Hernia", "No Finding"]].tolist() == [1, 1, 0, 0]
    assert t.loc["00000001_001", "No Finding"] == 1
    assert t.loc["00000003_000", "split"] == "test"
    assert index.split.source in ("official", "official+hashed_val")
    check_patient_splits(index.table)


def test_folder_per_class_with_patient_regex_and_leak_check(tmp_path):
    for split, cls, name in [
        ("train", "NORMAL", "IM-0001-0001.jpeg"),
        ("train", "PNEUMONIA", "person1_bacteria_1.jpeg"),
        ("train", "PNEUMONIA", "person1_bacteria_2.jpeg"),
        ("test", "PNEUMONIA", "person2_virus_5.jpeg"),
        ("test", "NORMAL", "IM-0002-0001.jpeg"),
    ]:
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / split / cls / name)
    opts = AdapterOptions(patient_regex=r"^(person\d+)_")
    index = build_index("folder", tmp_path, opts)
    t = index.table.set_index("image_id")
    assert index.label_columns == ["NORMAL", "PNEUMONIA"]
    assert t.loc["train/PNEUMONIA/person1_bacteria_1", "patient_id"] == "person1"
    assert t.loc["train/PNEUMONIA/person1_bacteria_1", ["NORMAL", "PNEUMONIA"]].tolist() == [0, 1]
    assert t.loc["test/NORMAL/IM-0002-0001", "split"] == "test"
    (tmp_path / "test" / "PNEUMONIA" / "person1_bacteria_9.jpeg").write_bytes((tmp_path / "train" / "PNEUMONIA" / "person1_bacteria_1.jpeg").read_bytes())
    with pytest.raises(DataError, match="person1"):
        build_index("folder", tmp_path, opts)  # the official folders put person1 in train and test
    hashed = build_index("folder", tmp_path, opts, SplitSpec(ignore_official=True))
    check_patient_splits(hashed.table)


@needs_shared
def test_covid_shared_pairs():
    index = build_index("covid", SHARED_DATA / "covid_cxr")
    t = index.table
    assert len(t) == 211 and t["path"].str.startswith("images/").all()
    assert "COVID-19" in index.label_columns and "ARDS" in index.label_columns
    assert t["report"].str.len().gt(0).mean() > 0.9
    assert any("same image file" in n for n in index.notes)  # one image listed under two patient ids
    check_patient_splits(t)
    assert t[index.label_columns].isna().all(axis=1).any()  # 'todo' findings have no labels


def test_covid_original_metadata_layout(tmp_path):
    pd.DataFrame(
        {
            "patientid": ["2", "2", "3", "4"],
            "offset": ["0", "3", "", "5"],
            "finding": ["Pneumonia/Viral/COVID-19", "Pneumonia/Viral/COVID-19", "todo", "Pneumonia/Bacterial"],
            "view": ["PA", "L", "AP Supine", "Axial"],
            "modality": ["X-ray", "X-ray", "X-ray", "CT"],
            "folder": ["images", "images", "images", "volumes"],
            "filename": ["a.jpg", "b.jpg", "c.png", "d.nii.gz"],
            "clinical_notes": ["Bilateral opacities.", "Bilateral opacities.", "", "CT"],
        }
    ).to_csv(tmp_path / "metadata.csv", index=False)
    index = build_index("covid", tmp_path)
    t = index.table
    assert list(t["path"]) == ["images/a.jpg", "images/c.png"]  # lateral filtered, CT dropped
    assert t["view"].tolist() == ["PA", "AP SUPINE"]
    assert index.label_columns == ["COVID-19", "Pneumonia", "Viral"]
    assert t.iloc[0][["COVID-19", "Pneumonia", "Viral"]].tolist() == [1, 1, 1]
    assert t.iloc[1][["COVID-19", "Pneumonia", "Viral"]].isna().all()


def test_generic_csv(tmp_path):
    pd.DataFrame(
        {
            "file": ["img/a.png", "img/b.png", "img/c.png"],
            "mrn": ["P1", "P1", "P2"],
            "text": ["FINDINGS: clear.", "FINDINGS: effusion.", ""],
            "effusion": ["negative", "positive", "uncertain"],
            "edema": ["0", "1", ""],
        }
    ).to_csv(tmp_path / "export.csv", index=False)
    opts = AdapterOptions(csv="export.csv", image_column="file", text_column="text", label_columns=["effusion", "edema"], patient_column="mrn")
    index = build_index("generic_csv", tmp_path, opts)
    t = index.table
    assert t["effusion"].tolist()[:2] == [0, 1] and t["effusion"].iloc[2] == -1
    assert np.isnan(t["edema"].iloc[2]) and t["report"].iloc[1] == "FINDINGS: effusion."
    check_patient_splits(t)
    assert t.groupby("patient_id")["split"].nunique().max() == 1
    with pytest.raises(DataError, match="did you mean 'effusion'"):
        build_index("generic_csv", tmp_path, AdapterOptions(csv="export.csv", image_column="file", label_columns=["efusion"]))
    with pytest.raises(ConfigError, match="--image-column"):
        build_index("generic_csv", tmp_path, AdapterOptions(csv="export.csv"))


# ----------------------------------------------------------------- splits


def test_hashed_split_is_deterministic_patient_level_and_roughly_proportional():
    patients = pd.Series([f"p{i // 3}" for i in range(30000)])
    a = hashed_split(patients, 0, (0.8, 0.1, 0.1))
    b = hashed_split(patients.sample(frac=1.0, random_state=1).sort_index(), 0, (0.8, 0.1, 0.1))
    assert a.equals(b)
    frame = pd.DataFrame({"patient_id": patients, "split": a})
    check_patient_splits(frame)
    share = frame.drop_duplicates("patient_id")["split"].value_counts(normalize=True)
    assert abs(share["train"] - 0.8) < 0.02 and abs(share["test"] - 0.1) < 0.02
    assert not hashed_split(patients, 1, (0.8, 0.1, 0.1)).equals(a)


def test_leak_check_names_the_patient():
    frame = pd.DataFrame({"patient_id": ["a", "a", "b"], "split": ["train", "test", "val"]})
    with pytest.raises(DataError, match=r"a \(test/train\)"):
        check_patient_splits(frame)


def test_manifest_round_trip_freezes_the_split(tmp_path):
    root = make_mimic_jpg(tmp_path / "mimic", images=False)
    first = build_index("mimic_cxr_jpg", root, split=SplitSpec(ignore_official=True, seed=3))
    manifest = tmp_path / "manifest.csv"
    first.manifest().to_csv(manifest, index=False)
    again = build_index("mimic_cxr_jpg", root, split=SplitSpec(file=str(manifest)))
    assert again.split.source == "file"
    assert again.table["split"].tolist() == first.table["split"].tolist()
