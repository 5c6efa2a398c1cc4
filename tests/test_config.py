import pytest

from radpair.config import load_config, parse_overrides
from radpair.errors import ConfigError
from radpair_train.config import PretrainConfig


def test_overrides_are_typed_and_nested():
    cfg = load_config(PretrainConfig, None, ["optim.lr=3e-4", "train.epochs=2", "data.corpus=/x", "train.max_steps=null"])
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.train.epochs == 2 and cfg.data.corpus == "/x" and cfg.train.max_steps is None
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


def test_unknown_key_names_key_and_closest(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  weight_decy: 0.1\n")
    with pytest.raises(ConfigError, match=r"optim.weight_decy.*did you mean 'optim.weight_decay'"):
        load_config(PretrainConfig, f)
    with pytest.raises(ConfigError, match=r"'trian'.*did you mean 'train'"):
        load_config(PretrainConfig, None, ["trian.epochs=3"])


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"train.epochs.*expected int"):
        load_config(PretrainConfig, None, ["train.epochs=three"])
    with pytest.raises(ConfigError, match=r"optim.lr.*expected float"):
        load_config(PretrainConfig, None, ["optim.lr=fast"])


def test_unknown_registry_name_suggests_closest():
    from radpair.models import IMAGE_ENCODERS

    with pytest.raises(ConfigError, match=r"did you mean 'resnet18'"):
        IMAGE_ENCODERS.get("resnet-18")


def test_missing_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(PretrainConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(PretrainConfig, bad)


def test_an_override_sets_a_mapping_instead_of_merging_into_it(tmp_path):
    from radpair.config import apply_overrides

    base = {"optim": {"lr": 0.2, "lr_scale": {"textual": 0.005}}, "train": {"epochs": 3}}
    out = apply_overrides(base, ["optim.lr_scale={}", "train.seed=1", "data.batch_size=8"])
    assert out == {"optim": {"lr": 0.2, "lr_scale": {}}, "train": {"epochs": 3, "seed": 1}, "data": {"batch_size": 8}}
    assert base["optim"]["lr_scale"] == {"textual": 0.005} and base["train"] == {"epochs": 3}  # untouched
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  name: sgd\n  lr_scale: {textual: 0.005, visual_projection: 0.005}\n")
    assert load_config(PretrainConfig, recipe, ["optim.lr_scale={}"]).optim.lr_scale == {}
    assert load_config(PretrainConfig, recipe, ['optim.lr_scale={"textual": 0.1}']).optim.lr_scale == {"textual": 0.1}
    with pytest.raises(ConfigError, match="must look like"):
        apply_overrides(base, ["optim.lr"])
