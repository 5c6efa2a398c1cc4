"""Model packages: export from a transfer run, verified loading, ONNX parity, thresholds from validate."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from radpair.errors import DataError


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
    from radpair.data.synth import generate_corpus
    from radpair.transfer import TransferConfig, run_transfer

    root = tmp_path_factory.mktemp("pkg")
    corpus = generate_corpus(root / "corpus", n_images=200, size=64, seed=3, workers=1)
    cfg = TransferConfig(n=["20"], repeats=1, n_bootstrap=50, encoders=["random"], protocols=["linear", "finetune"])
    cfg.linear.c_grid = [1e-2, 1.0]
    cfg.finetune.lr, cfg.finetune.weight_decay = [1e-3], [1e-4]
    cfg.finetune.max_steps, cfg.finetune.min_steps, cfg.finetune.eval_every, cfg.finetune.patience = 10, 5, 5, 2
    result = run_transfer(cfg, corpus, root / "transfer", log=lambda s: None)
    return corpus, result, root / "transfer"


@pytest.fixture(scope="module")
def package(transfer_run, tmp_path_factory):
    from radpair.package import export_package

    _, _, run = transfer_run
    out = tmp_path_factory.mktemp("out") / "finetune_pkg"
    return export_package(out, transfer_run=run, arm="random:finetune", onnx=True, feature_sample=200,
                          log=lambda s: None)


def _cell_dir(run, arm):
    return next((run / "cells" / arm.replace(":", "__")).iterdir())


def _test_images(corpus, run):
    z = np.load(run / "test_labels.npz")
    pos = {i: k for k, i in enumerate(corpus.index["image_id"].astype(str))}
    rows = np.array([pos[i] for i in z["image_ids"]])
    return corpus.read_images(corpus.index["image_index"].to_numpy()[rows])


def _calibrated(p, t):
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return 1 / (1 + np.exp(-(np.log(p) - np.log1p(-p)) / t))


def test_package_layout_card_and_hashes(package):
    from radpair.package.files import sha256_file

    names = {p.name for p in package.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessing.json", "labels.json", "feature_stats.safetensors",
            "model.onnx", "README.md", "card.json"} <= names
    card = json.loads((package / "card.json").read_text())
    assert set(card["files"]) == names - {"card.json"}
    assert all(sha256_file(package / n) == h for n, h in card["files"].items())
    assert card["provenance"]["arm"] == "random:finetune" and card["provenance"]["n_train"] == 20
    assert card["metrics"]["test_rows"] and card["metrics"]["test_rows"][0]["ci_low"] is not None
    assert card["training_data"]["subset"]["val_sha256"] and card["intended_use"] and card["limitations"]
    prep = json.loads((package / "preprocessing.json").read_text())
    assert prep["image_size"] == [64, 64] and prep["pixel_mean"] == 0.5 and "normalisation" in prep
    assert "model.safetensors" in (package / "README.md").read_text()


def test_loaded_model_reproduces_the_transfer_runs_test_probabilities(transfer_run, package):
    from radpair.data.tensors import images_to_tensor
    from radpair.package import load_package

    corpus, _, run = transfer_run
    pkg = load_package(package)
    saved = np.load(_cell_dir(run, "random:finetune") / "predictions.npz")["test"]
    with torch.inference_mode():
        p = pkg.model(images_to_tensor(_test_images(corpus, run))).numpy()
    t = float(pkg.labels["temperature"]["temperature"])
    assert float(pkg.model.temperature) == pytest.approx(t)
    np.testing.assert_allclose(p, _calibrated(saved, t), atol=1e-5)


def test_onnx_matches_torch(transfer_run, package):
    ort = pytest.importorskip("onnxruntime")
    from radpair.data.tensors import images_to_tensor
    from radpair.package import load_package

    corpus, _, run = transfer_run
    pkg = load_package(package)
    x = images_to_tensor(_test_images(corpus, run)[:7])
    sess = ort.InferenceSession(str(package / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x.numpy()})[0]
    with torch.inference_mode():
        want = pkg.model(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("name,how", [("labels.json", "missing"), ("model.safetensors", "altered"),
                                      ("preprocessing.json", "altered"), ("card.json", "missing")])
def test_missing_or_altered_file_fails_naming_it(package, tmp_path, name, how):
    from radpair.package import load_package

    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    target = copy / name
    if how == "missing":
        target.unlink()
    else:
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
    with pytest.raises(DataError, match=name.replace(".", r"\.")) as err:
        load_package(copy)
    assert how in str(err.value) or "SHA-256" in str(err.value)


def test_thresholds_come_from_the_validate_split(transfer_run, package):
    from radpair.package.calibration import map_thresholds

    corpus, _, run = transfer_run
    labels = json.loads((package / "labels.json").read_text())
    th = labels["thresholds"]
    assert th["split"] == "validate" and "validation" in th["chosen_on"]
    saved = json.loads((_cell_dir(run, "random:finetune") / "thresholds.json").read_text())
    t = labels["temperature"]["temperature"]
    np.testing.assert_allclose(th["values"], map_thresholds(saved["values"], t), rtol=0, atol=1e-5)
    assert labels["temperature"]["split"] == "validate"
    assert labels["temperature"]["ece_before"] is not None and labels["temperature"]["ece_after"] is not None


def test_thresholds_missing_from_the_run_are_chosen_on_validate(transfer_run, tmp_path):
    """A run that saved no thresholds: they are chosen at export on the cell's validation
    draw (every id of it in the validate split), never on test."""
    from radpair.data.tensors import images_to_tensor
    from radpair.evaluation.taskmetrics import choose_thresholds
    from radpair.package import export_package, load_package
    from radpair.tasks import load_task, task_labels
    from radpair.transfer.subsets import SubsetManifest

    corpus, _, run = transfer_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("features"))
    cell = _cell_dir(copy, "random:linear")
    (cell / "thresholds.json").unlink()
    res = json.loads((copy / "results.json").read_text())
    for c in res["cells"]:
        c["thresholds"] = None
    (copy / "results.json").write_text(json.dumps(res))
    out = export_package(tmp_path / "pkg", transfer_run=copy, arm="random:linear", temperature=False,
                         feature_sample=100, log=lambda s: None)
    th = json.loads((out / "labels.json").read_text())["thresholds"]
    assert th["split"] == "validate" and "chosen at export" in th["chosen_on"]
    manifest = SubsetManifest.load(next((copy / "manifests").glob("*.json")))
    pos = {i: k for k, i in enumerate(corpus.index["image_id"].astype(str))}
    rows = np.array([pos[i] for i in manifest.val_ids])
    assert set(corpus.index["split"].to_numpy()[rows]) == {"validate"}
    spec = load_task("findings7")
    val = task_labels(corpus, spec, spec.train_labels, rows)
    val_probs = np.load(cell / "predictions.npz")["val"].astype(np.float64)
    expected = choose_thresholds(val.kind, val.y, val.mask, val_probs)
    np.testing.assert_allclose(th["values"], expected.values)
    # the linear arm's package reproduces its saved test outputs too (frozen encoder + head)
    pkg = load_package(out)
    with torch.inference_mode():
        p = pkg.model(images_to_tensor(_test_images(corpus, run))).numpy()
    np.testing.assert_allclose(p, np.load(cell / "predictions.npz")["test"], atol=1e-5)


def test_a_method_with_its_own_image_classifier_is_packaged(transfer_run, tmp_path):
    """Chauhan's image classifier: found by its declared ``predict``, not by its name; the
    package reproduces ``model.predict`` and needs the run folder no more."""
    import json as _json

    from radpair.config import load_config
    from radpair.data.tensors import images_to_tensor
    from radpair.evaluation.own_classifier import load_trained_method
    from radpair.package import export_package, load_package
    from radpair.text import train_wordpiece_tokenizer
    from radpair_train.config import PretrainConfig
    from radpair_train.loop import Trainer

    corpus, _, _ = transfer_run
    tok = tmp_path / "tok"
    train_wordpiece_tokenizer(corpus.index["report"].astype(str).tolist(), tok, vocab_size=300, min_frequency=1)
    run = tmp_path / "run"
    over = {"data.corpus": str(corpus.root), "text_encoder.tokenizer": str(tok), "train.out_dir": str(run),
            "image_encoder.name": "resnet_tiny", "text_encoder.hidden_size": 32, "text_encoder.num_layers": 1,
            "text_encoder.num_heads": 2, "text_encoder.intermediate_size": 64, "text_encoder.max_length": 48,
            "data.batch_size": 32, "train.progress": False, "train.threads": 1, "train.device": "cpu",
            "method.name": "chauhan_ranking", "method.embedding_dim": 16, "method.label_source": "truth",
            "method.labelled_fraction": 0.5, "method.ranking_epochs": 1, "method.joint_epochs": 1}
    Trainer(load_config(PretrainConfig, None, [f"{k}={v}" for k, v in over.items()])).fit()
    out = export_package(tmp_path / "pkg", pretraining_run=run, feature_sample=100, log=lambda s: None)
    model, _ = load_trained_method(run)
    shutil.rmtree(tok)  # the package carries its own tokenizer
    pkg = load_package(out)
    assert pkg.categorical and pkg.config["kind"] == "method" and pkg.thresholds is None
    assert _json.loads((out / "labels.json").read_text())["temperature"]["split"] == "validate"
    x = images_to_tensor(corpus.read_images(np.arange(6)))
    pkg.model.temperature.fill_(1.0)
    with torch.inference_mode():
        np.testing.assert_allclose(pkg.model(x).numpy(), model.predict(x).numpy(), atol=1e-5)
