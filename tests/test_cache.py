"""Preprocessing cache: corpus format, skipped files, resume after SIGKILL, shards, real data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_data_io import phantom, write_dicom, write_jpeg, write_truncated_jpeg

from radpair.data.adapters import AdapterOptions, build_index
from radpair.data.cache import (
    WORK_DIR,
    CacheConfig,
    build_cache,
    merge_shards,
    parse_shard,
)
from radpair.data.corpus import INDEX_COLUMNS, Corpus
from radpair.data.io import NormalisationSpec, ResizeSpec
from radpair.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not available")
SRC = Path(__file__).resolve().parents[1] / "src"

# ----------------------------------------------------------------- fixtures


def make_mixed_dataset(root: Path) -> AdapterOptions:
    """A hospital-style export: JPEG, RGB JPEG, 8- and 16-bit PNG, MONOCHROME1/2 DICOMs and
    three broken entries (truncated JPEG, zero-byte file, missing file)."""
    img = root / "img"
    img.mkdir(parents=True)
    write_jpeg(img / "a.jpg", 90, 70)
    write_jpeg(img / "b.jpg", 60, 80, seed=1, rgb=True)
    Image.fromarray((phantom(50, 40, 255)).astype(np.uint8)).save(img / "c.png")
    Image.fromarray(phantom(64, 48, 3000)).save(img / "d16.png")
    body = phantom(64, 52)
    write_dicom(img / "m2.dcm", body, "MONOCHROME2")
    write_dicom(img / "m1.dcm", 4095 - body, "MONOCHROME1")
    write_truncated_jpeg(img / "trunc.jpg")
    (img / "empty.jpg").write_bytes(b"")
    files = ["a.jpg", "b.jpg", "trunc.jpg", "c.png", "d16.png", "empty.jpg", "m2.dcm", "m1.dcm", "missing.jpg"]
    pd.DataFrame(
        {
            "file": [f"img/{f}" for f in files],
            "patient": [f"P{i // 2}" for i in range(len(files))],
            "text": [f"FINDINGS: image {f}.\nIMPRESSION: none." for f in files],
            "effusion": ["1", "0", "-1", "", "1", "0", "1", "0", ""],
        }
    ).to_csv(root / "export.csv", index=False)
    return AdapterOptions(csv="export.csv", image_column="file", text_column="text", label_columns=["effusion"], patient_column="patient")


def make_noise_pngs(root: Path, n: int = 24, side: int = 768) -> AdapterOptions:
    """n copies of one large 16-bit PNG (slow enough to decode that a kill lands mid-run)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 4096, (side, side), dtype=np.uint16)).save(root / "x0.png")
    data = (root / "x0.png").read_bytes()
    for i in range(1, n):
        (root / f"x{i}.png").write_bytes(data)
    pd.DataFrame({"file": [f"x{i}.png" for i in range(n)], "patient": [f"P{i}" for i in range(n)]}).to_csv(root / "list.csv", index=False)
    return AdapterOptions(csv="list.csv", image_column="file", patient_column="patient")


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def config(**kw) -> CacheConfig:
    kw.setdefault("resize", ResizeSpec(32))
    kw.setdefault("chunk_size", 2)
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return CacheConfig(**kw)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    options = make_mixed_dataset(root)
    reference = root.parent / (root.name + "_reference")
    report = build_cache(build_index("generic_csv", root, options), reference, config())
    return root, options, reference, report


# ----------------------------------------------------------------- format and skipped files


def test_cache_writes_the_corpus_format_and_lists_skipped_files(mixed):
    _, _, out, report = mixed
    assert report.complete and report.n_planned == 9 and report.n_written == 6 and report.n_skipped == 3
    corpus = Corpus.open(out)
    assert corpus.images.dtype == np.uint8 and corpus.images.shape == (6, 32, 32)
    assert list(corpus.index.columns) == INDEX_COLUMNS + ["effusion"]
    assert corpus.index["image_index"].tolist() == list(range(6))
    assert corpus.label_columns == ["effusion"]
    assert corpus.meta["normalisation"]["invert_monochrome1"] is True
    assert corpus.meta["preprocess"]["resize"] == {"size": 32, "fit": "pad", "resample": "area", "draft": True}
    assert corpus.index["report"].iloc[0] == "FINDINGS: image a.jpg.\nIMPRESSION: none."
    skipped = pd.read_csv(out / "skipped.csv")
    reasons = dict(zip(skipped["image_id"], skipped["reason"]))
    assert set(reasons) == {"img/trunc", "img/empty", "img/missing"}
    assert "truncated" in reasons["img/trunc"] and "empty file" in reasons["img/empty"] and "not found" in reasons["img/missing"]
    assert skipped["path"].str.endswith(("trunc.jpg", "empty.jpg", "missing.jpg")).all()
    ids = corpus.index["image_id"].tolist()
    m1, m2 = corpus.images[ids.index("img/m1")].astype(int), corpus.images[ids.index("img/m2")].astype(int)
    assert np.abs(m1 - m2).max() <= 1 and m2[16, 16] > m2[16, 2] + 50  # same polarity: body bright, air dark
    sources = pd.read_csv(out / "sources.csv")
    assert sources["path"].tolist()[:2] == ["img/a.jpg", "img/b.jpg"]
    assert set(pd.read_csv(out / "split_manifest.csv").columns) == {"patient_id", "split"}
    assert not (out / WORK_DIR).exists()


def test_rerun_of_a_complete_cache_does_nothing_and_other_settings_need_overwrite(mixed, tmp_path):
    root, options, reference, _ = mixed
    out = tmp_path / "c"
    index = build_index("generic_csv", root, options)
    build_cache(index, out, config())
    before = files_of(out)
    again = build_cache(index, out, config(workers=2))  # workers do not change the result
    assert again.chunks_done_now == 0 and any("already complete" in n for n in again.notes)
    assert files_of(out) == before == files_of(reference)
    with pytest.raises(DataError, match="--overwrite"):
        build_cache(index, out, config(resize=ResizeSpec(24)))
    build_cache(index, out, config(resize=ResizeSpec(24), overwrite=True))
    assert Corpus.open(out).image_size == (24, 24)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="other files"):
        build_cache(index, tmp_path / "busy", config())


# ----------------------------------------------------------------- resume


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import radpair.data.cache as cache
    import radpair.data.corpus as corpus
    from radpair.data.adapters import AdapterOptions, build_index
    from radpair.data.io import NormalisationSpec, ResizeSpec

    root, out, where, after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    count = [0]

    def die_after_chunks(status):
        count[0] += 1
        if count[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)

    real_write = corpus.atomic_write_text

    def die_before_meta(path, text):
        if path.name == "meta.json":
            os.kill(os.getpid(), signal.SIGKILL)
        real_write(path, text)

    if where == "chunks":
        cache._chunk_committed = die_after_chunks
    else:
        corpus.atomic_write_text = die_before_meta
    options = AdapterOptions(csv="export.csv", image_column="file", text_column="text", label_columns=["effusion"], patient_column="patient")
    index = build_index("generic_csv", root, options)
    cache.build_cache(index, out, cache.CacheConfig(ResizeSpec(32), chunk_size=2, workers=1, progress=False))
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.parametrize("where, after", [("chunks", 1), ("chunks", 3), ("assembly", 0)])
def test_resume_after_sigkill_is_byte_identical(mixed, tmp_path, where, after):
    root, options, reference, _ = mixed
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(root), str(out), where, str(after)], env=_env(), capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "meta.json").exists()  # the cache is visibly unfinished
    with pytest.raises(DataError, match="not a radpair corpus"):
        Corpus.open(out)
    done = len(list((out / WORK_DIR).glob("chunk_*.json")))
    assert done == (after if where == "chunks" else 5)
    report = build_cache(build_index("generic_csv", root, options), out, config())
    assert report.complete and report.chunks_reused == done and report.chunks_done_now == 5 - done
    assert files_of(out) == files_of(reference)


def test_cli_parallel_run_killed_mid_way_resumes(tmp_path):
    data = tmp_path / "data"
    options = make_noise_pngs(data)
    reference = tmp_path / "reference"
    build_cache(build_index("generic_csv", data, options), reference, config(resize=ResizeSpec(64), chunk_size=1))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "radpair_train.cli", "preprocess", "--dataset", "generic_csv", "--root", str(data), "--csv", "list.csv",
           "--image-column", "file", "--patient-column", "patient", "--size", "64", "--chunk-size", "1", "--workers", "2", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / WORK_DIR).glob("chunk_*.json"))) >= 3:
            os.killpg(proc.pid, signal.SIGKILL)  # the parent and its worker processes
            break
        time.sleep(0.002)
    proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    if killed:
        assert not (out / "meta.json").exists()
    rerun = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert files_of(out) == files_of(reference)
    if killed:
        assert "reused" in rerun.stdout and " 0 reused" not in rerun.stdout


# ----------------------------------------------------------------- shards


def test_shards_merge_to_the_same_cache(mixed, tmp_path):
    root, options, reference, _ = mixed
    index = build_index("generic_csv", root, options)
    a, b = tmp_path / "shard0", tmp_path / "shard1"
    ra = build_cache(index, a, config(shard=(0, 2)))
    assert not ra.complete and not (a / "meta.json").exists() and ra.chunks_done_now == 3
    with pytest.raises(DataError, match="not finished"):
        merge_shards(tmp_path / "early", [a])
    build_cache(index, b, config(shard=(1, 2)))
    merge_shards(tmp_path / "merged", [a, b])
    assert files_of(tmp_path / "merged") == files_of(reference)
    merge_shards(a, [a, b])  # merging into one of the shard folders works too
    assert files_of(a) == files_of(reference) and not (a / WORK_DIR).exists()
    assert parse_shard("1/4") == (1, 4)
    with pytest.raises(ConfigError, match="uint8"):
        config(normalisation=NormalisationSpec(dtype="uint16"))
    with pytest.raises(ConfigError, match="0 <= i < n"):
        parse_shard("4/4")


# ----------------------------------------------------------------- real data and the command line


@needs_shared
def test_real_covid_images_through_adapter_and_cache(tmp_path):
    index = build_index("covid", SHARED_DATA / "covid_cxr")
    report = build_cache(index, tmp_path / "covid", config(resize=ResizeSpec(64), chunk_size=64))
    corpus = Corpus.open(tmp_path / "covid")
    assert report.n_skipped == 0 and len(corpus) == 211
    means = corpus.images.reshape(len(corpus), -1).mean(axis=1)
    assert (means > 20).all() and (corpus.images.reshape(len(corpus), -1).std(axis=1) > 10).all()
    assert "COVID-19" in corpus.label_columns
    assert corpus.meta["split"]["source"] == "hashed"


@needs_shared
def test_real_iu_reports_through_adapter_and_cache(tmp_path):
    options = AdapterOptions(image_root=str(tmp_path / "png"))
    index = build_index("iu_xray", SHARED_DATA / "iu_xray", options, limit=10)
    (tmp_path / "png").mkdir()
    for i, name in enumerate(index.table["path"]):  # the collection's images are not in ../shared
        Image.fromarray(phantom(40 + i, 36, 255).astype(np.uint8)).save(tmp_path / "png" / name)
    build_cache(index, tmp_path / "iu", config())
    corpus = Corpus.open(tmp_path / "iu")
    assert corpus.index["report"].tolist() == index.table["report"].tolist()
    assert corpus.index["report"].iloc[0].startswith("INDICATION: Positive TB test\n\nCOMPARISON: None.\n\nFINDINGS:")


def test_cli_mimic_tree_and_errors(tmp_path, capsys):
    from test_adapters import make_mimic_jpg

    from radpair_train.cli import main

    root = make_mimic_jpg(tmp_path / "mimic")
    out = tmp_path / "cache"
    assert main(["preprocess", "--dataset", "mimic_cxr_jpg", "--root", str(root), "--size", "32", "--out", str(out), "--workers", "1", "--uncertainty", "ignore"]) == 0
    corpus = Corpus.open(out)
    assert len(corpus) == 4 and set(corpus.index["split"]) == {"train", "val", "test"}
    assert -1 not in corpus.index[corpus.label_columns].to_numpy()
    assert corpus.meta["source"]["options"] == {"uncertainty": "ignore"}
    assert main(["preprocess", "--dataset", "mimic_cxr_jgp", "--root", str(root), "--size", "32", "--out", str(tmp_path / "x")]) == 2
    assert "did you mean 'mimic_cxr_jpg'" in capsys.readouterr().err
    assert main(["preprocess", "--dataset", "mimic_cxr_jpg", "--root", str(root), "--size", "32", "--out", str(tmp_path / "z"), "--fallback", "minmx"]) == 2
    assert "did you mean 'minmax'" in capsys.readouterr().err
    assert main(["preprocess", "--list-datasets"]) == 0
    assert "generic_csv" in capsys.readouterr().out
