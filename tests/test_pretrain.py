import json
import os
import stat

import pytest
import torch

from radpair_train.cli import main


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "synth", "pretrain", "tokenizer"):
        assert cmd in out


def test_pretrain_smoke(tmp_path, random_corpus, tokenizer_dir):
    out = tmp_path / "run"
    rc = main([
        "pretrain", "--config", "configs/convirt_cpu.yaml",
        f"data.corpus={random_corpus.root}", f"text_encoder.tokenizer={tokenizer_dir}", f"train.out_dir={out}",
        "train.max_steps=6", "data.batch_size=16", "train.log_every=2", "train.progress=false",
        "text_encoder.hidden_size=32", "text_encoder.intermediate_size=64", "text_encoder.max_length=32",
    ])
    assert rc == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4, 6]
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in lines)
    assert set(lines[0]["loss_components"]) == {"image_to_text", "text_to_image"}
    assert "text_encoder:" in (out / "config.yaml").read_text()
    assert (out / "image_encoder.safetensors").is_file() and (out / "checkpoints" / "latest").is_file()

    # the export records how its training images were prepared, and a probe corpus
    # prepared differently is reported
    from radpair.models.export import input_mismatches, read_safetensors_metadata

    meta = read_safetensors_metadata(out / "image_encoder.safetensors")
    assert meta["input"]["image_size"] == list(random_corpus.image_size)
    assert {"normalisation", "pixel_mean", "pixel_std"} <= set(meta["input"])
    assert input_mismatches(meta, random_corpus) == []
    other = dict(meta, input=dict(meta["input"], normalisation={"window": "dicom"}, image_size=[224, 224]))
    problems = input_mismatches(other, random_corpus)
    assert len(problems) == 2 and "image size" in problems[0] and "normalisation" in problems[1]


def test_bad_config_key_fails_at_start(tmp_path, random_corpus, capsys):
    rc = main(["pretrain", "--config", "configs/convirt_cpu.yaml", "optim.lerning_rate=1", f"train.out_dir={tmp_path}/r"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "optim.lerning_rate" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out_dir_as_user(tmp_path, random_corpus, tokenizer_dir, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    rc = main(["pretrain", "--config", "configs/convirt_cpu.yaml", f"data.corpus={random_corpus.root}",
               f"text_encoder.tokenizer={tokenizer_dir}", f"train.out_dir={locked}/run"])
    assert rc == 2 and "not writable" in capsys.readouterr().err


def test_unwritable_out_dir(tmp_path, random_corpus, tokenizer_dir, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should go")
    rc = main(["pretrain", "--config", "configs/convirt_cpu.yaml", f"data.corpus={random_corpus.root}",
               f"text_encoder.tokenizer={tokenizer_dir}", f"train.out_dir={blocker}/run"])
    assert rc == 2
    assert "not writable" in capsys.readouterr().err


def test_bad_empty_text_policy_fails_at_start(tmp_path, capsys):
    rc = main(["pretrain", "--config", "configs/convirt_cpu.yaml", "data.empty_text=skip",
               f"train.out_dir={tmp_path}/r"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "data.empty_text" in err and "drop" in err and "keep" in err
    assert not (tmp_path / "r").exists()
