"""`radpair predict`: same probabilities as the in-memory model, a row for every input file."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    from radpair.data.synth import generate_corpus
    from radpair.package import export_package, load_package
    from radpair.transfer import TransferConfig, run_transfer

    root = tmp_path_factory.mktemp("predict")
    corpus = generate_corpus(root / "corpus", n_images=160, size=64, seed=5, workers=1)
    cfg = TransferConfig(n=["20"], repeats=1, n_bootstrap=0, encoders=["random"], protocols=["linear"])
    cfg.linear.c_grid = [1.0]
    run_transfer(cfg, corpus, root / "transfer", log=lambda s: None)
    out = export_package(root / "pkg", transfer_run=root / "transfer", arm="random:linear", feature_sample=100,
                         log=lambda s: None)
    return corpus, out, load_package(out)


def _png(path, image):
    from PIL import Image

    Image.fromarray(image).save(path)


def _dicom(path, pixels, study="1.2.3.4", view="PA", bits=12):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.ViewPosition, ds.StudyInstanceUID = view, study
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("cam", [False, True], ids=["plain", "with-cam"])
def test_predict_gives_the_in_memory_models_probabilities(package, tmp_path, cam):
    """With ``--cam`` too: the overlays used to leave the model in train mode after the first
    batch (MONAI restores the mode of its wrapper, which starts in train mode), so later
    batches ran BatchNorm on batch statistics."""
    from radpair.data.tensors import images_to_tensor
    from radpair.package import predict

    corpus, out, pkg = package
    images = corpus.read_images(np.arange(10))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(images):
        _png(folder / f"img{i:02d}.png", im)
    summary = predict(out, [folder], tmp_path / "p.csv", batch_size=4, log=lambda s: None,
                      cam_dir=tmp_path / "cams" if cam else None)
    assert summary.n_predicted == 10 and summary.n_errors == 0
    if cam:
        assert len(list((tmp_path / "cams").glob("*.png"))) == 10
    rows = _rows(tmp_path / "p.csv")
    got = np.array([[float(r[f"p_{n}"]) for n in pkg.class_names] for r in rows])
    with torch.inference_mode():
        want = pkg.model(images_to_tensor(images)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    th = pkg.thresholds
    labels = np.array([[int(r[f"label_{n}"]) for n in pkg.class_names] for r in rows])
    np.testing.assert_array_equal(labels, (want >= th).astype(int))


def test_every_bad_file_gets_a_row_with_its_reason_and_the_rest_are_predicted(package, tmp_path):
    from PIL import Image

    from radpair_train.cli import main

    corpus, out, pkg = package
    images = corpus.read_images(np.arange(4))
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    _png(folder / "a.png", images[0])
    Image.fromarray(images[1]).save(folder / "sub" / "b.jpg", quality=95)
    _dicom(folder / "sub" / "c.dcm", images[2].astype(np.uint16) * 16, study="1.2.3.9")
    _dicom(folder / "d.dcm", images[3].astype(np.uint16) * 16, study="1.2.3.9", view="LL")
    (folder / "zero.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(images[0]).save(buf, format="PNG")
    (folder / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 10)
    csv_path = tmp_path / "out.csv"
    rc = main(["predict", "--model", str(out), str(folder), "-o", str(csv_path), "--batch", "3", "--no-progress",
               "--study-column", "StudyInstanceUID", "--cam", str(tmp_path / "cams")])
    assert rc == 0
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in _rows(csv_path)}
    assert set(rows) == {"a.png", "b.jpg", "c.dcm", "d.dcm", "zero.png", "truncated.png", "notes.txt", "broken.dcm"}
    assert "empty file" in rows["zero.png"]["reason"]
    assert "truncated" in rows["truncated.png"]["reason"]
    assert "not a recognised image" in rows["notes.txt"]["reason"]
    assert rows["broken.dcm"]["status"] == "error" and rows["broken.dcm"]["reason"]
    for bad in ("zero.png", "truncated.png", "notes.txt", "broken.dcm"):
        assert rows[bad]["status"] == "error" and rows[bad][f"p_{pkg.class_names[0]}"] == ""
    for good in ("a.png", "b.jpg", "c.dcm", "d.dcm"):
        assert rows[good]["status"] in ("ok", "flagged")
        assert 0.0 <= float(rows[good][f"p_{pkg.class_names[0]}"]) <= 1.0 and rows[good]["ood_distance"]
        assert (tmp_path / "cams" / rows[good]["cam"].rsplit("/", 1)[-1]).is_file()
    # a 12-bit DICOM differs from the 8-bit synthetic training images; a lateral from its PA/AP views
    assert "bit depth 12" in rows["c.dcm"]["reason"] and rows["c.dcm"]["status"] == "flagged"
    if pkg.preprocessing.expected.get("views"):
        assert "view LL" in rows["d.dcm"]["reason"]
    studies = _rows(tmp_path / "out.studies.csv")
    s1 = next(s for s in studies if s["study_id"] == "1.2.3.9")
    assert s1["n_images"] == "2" and s1["n_predicted"] == "2"
    p = [float(rows[f][f"p_{pkg.class_names[0]}"]) for f in ("c.dcm", "d.dcm")]
    assert float(s1[f"max_p_{pkg.class_names[0]}"]) == pytest.approx(max(p), abs=1e-5)
    assert float(s1[f"mean_p_{pkg.class_names[0]}"]) == pytest.approx(np.mean(p), abs=1e-5)


def test_out_of_distribution_flag_uses_the_stored_training_percentile(package, tmp_path):
    from radpair.package import predict

    corpus, out, pkg = package
    stats = pkg.feature_stats
    assert stats is not None and stats.threshold > 0 and stats.percentile == 99.0
    rng = np.random.default_rng(0)
    folder = tmp_path / "noise"
    folder.mkdir()
    for i in range(3):  # white noise is nothing like a chest film
        _png(folder / f"n{i}.png", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    predict(out, [folder], tmp_path / "n.csv", log=lambda s: None)
    rows = _rows(tmp_path / "n.csv")
    assert all(r["out_of_distribution"] == "1" and "far from the training images" in r["reason"] for r in rows)
