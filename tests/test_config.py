"""Configs: validation, closest-key suggestions, --set overrides, recipes."""
from __future__ import annotations

import pytest

from hourglass import recipebook
from hourglass.config import apply_overrides, parse_value
from hourglass.errors import ConfigError, RegistryError
from hourglass.training import build_data, build_task


def test_every_recipe_validates() -> None:
    for name in recipebook.recipes():
        config = recipebook.load(name)
        assert config.name == name, f"recipe {name} should be named after its file"


def test_recipes_have_one_line_descriptions() -> None:
    items = recipebook.recipes()
    assert {"digits-ae", "mnist-ae", "mnist-dae", "mnist-vae", "mnist-wae"} <= set(items)
    assert all(text and "\n" not in text for text in items.values())


def test_set_overrides_keep_types() -> None:
    raw = apply_overrides({"train": {}}, ["train.lr=0.5", "train.max_epochs=3", "model.x.channels=[1, 2]", "a.b=null"])
    assert raw["train"] == {"lr": 0.5, "max_epochs": 3}
    assert raw["model"]["x"]["channels"] == [1, 2] and raw["a"]["b"] is None
    assert parse_value("true") is True and parse_value("gru") == "gru"


@pytest.mark.parametrize("item", ["data..path=x", ".lr=1", "train.=3"])
def test_a_set_key_with_an_empty_part_is_refused(item: str) -> None:
    """"data..path=x" was taken as an option named "" and refused as 'Unknown option "data."'."""
    from hourglass.errors import ConfigError

    with pytest.raises(ConfigError, match="has an empty part"):
        apply_overrides({}, [item])


def test_unknown_key_names_the_closest_valid_key() -> None:
    with pytest.raises(ConfigError, match=r'unknown key "train.max_epoch".*Did you mean "max_epochs"'):
        recipebook.load("digits-ae", ["train.max_epoch=3"])


def test_an_unknown_key_from_set_is_said_to_come_from_set_and_its_section_is_suggested(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r'"train.batch_size" \(given with --set\)\. Did you mean "data.batch_size"'):
        recipebook.load("digits-ae", ["train.batch_size=64"])
    (tmp_path / "c.yaml").write_text("name: x\ndata: {name: images, path: digits}\n"
                                     "model: {encoder: {name: mlp}, decoder: {name: mlp}}\n"
                                     "task: {name: autoencoder}\ntrain: {batch_size: 8}\n")
    with pytest.raises(ConfigError, match=r'unknown key "train.batch_size"\. Did you mean "data.batch_size"') as err:
        recipebook.load(str(tmp_path / "c.yaml"))
    assert "--set" not in str(err.value)  # this one is in the file


def test_unknown_section_is_refused() -> None:
    with pytest.raises(ConfigError, match=r'unknown key "trian".*Did you mean "train"'):
        recipebook.load("digits-ae", ["trian.lr=3"])


def test_wrong_value_type_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r'"train.lr" has a wrong value \'fast\''):
        recipebook.load("digits-ae", ["train.lr=fast"])


def test_component_option_typo_is_caught_at_build(tiny_config) -> None:
    config = tiny_config("digits-ae", "model.encoder.chanels=[4, 8]")
    with pytest.raises(ConfigError, match=r'"model.encoder.chanels".*Did you mean "channels"'):
        build_task(config, build_data(config))


def test_component_option_type_is_checked(tiny_config) -> None:
    config = tiny_config("digits-ae", "model.encoder.channels=many")
    with pytest.raises(ConfigError, match=r'"model.encoder.channels" has a wrong value'):
        build_task(config, build_data(config))


def test_unknown_encoder_lists_the_known_ones(tiny_config) -> None:
    config = tiny_config("digits-ae", "model.encoder.name=convv")
    with pytest.raises(RegistryError, match=r'Unknown encoder "convv".*Did you mean "conv".*Known encoders: .*mlp'):
        build_task(config, build_data(config))


def test_context_arguments_cannot_be_set(tiny_config) -> None:
    config = tiny_config("digits-ae", "model.encoder.input_shape=[1, 2, 3]")
    with pytest.raises(ConfigError, match="set by hourglass from the data"):
        build_task(config, build_data(config))


def test_unknown_recipe_suggests_one() -> None:
    with pytest.raises(ConfigError, match=r'"mnist-ea" is neither.*Did you mean "mnist-ae"'):
        recipebook.load("mnist-ea")


def test_an_override_read_as_the_recipe_says_where_overrides_go(capsys) -> None:
    """argparse ends --set's list at the next option: `--set a=1 --out DIR b=2` makes b=2 the recipe."""
    from hourglass.cli import main

    assert main(["train", "--set", "train.max_epochs=1", "--out", "runs/x", "train.lr=0.1"]) == 2
    err = capsys.readouterr().err
    assert '"train.lr=0.1" was read as the recipe' in err and "right after --set" in err


def test_duplicate_registration_is_an_error() -> None:
    from hourglass._registry import Registry

    reg = Registry("widget")
    reg.register("a")(type("A", (), {}))
    with pytest.raises(RegistryError, match='registered twice'):
        reg.register("a")(type("B", (), {}))


def test_a_utf16_config_is_read_and_a_latin1_one_is_refused_with_its_line(tmp_path) -> None:
    """read_yaml decoded UTF-8 only: a UTF-16 file (PowerShell's `>`) gave a UnicodeDecodeError traceback."""
    from hourglass.config import read_yaml
    from hourglass.errors import ConfigError

    (tmp_path / "u16.yaml").write_text("name: mine\nseed: 3\n", encoding="utf-16")
    assert read_yaml(tmp_path / "u16.yaml") == {"name": "mine", "seed": 3}
    (tmp_path / "l1.yaml").write_bytes("seed: 1\nname: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"l1.yaml is not utf-8 text: byte 17 \(line 2\).*Save the file as UTF-8"):
        read_yaml(tmp_path / "l1.yaml")


def test_a_key_written_twice_is_refused_with_both_lines(tmp_path) -> None:
    """PyYAML keeps the last of two equal keys: a second model: section replaced the first without a word."""
    from hourglass.config import read_yaml

    (tmp_path / "dup.yaml").write_text("model:\n  encoder: {name: conv}\n  decoder: {name: deconv}\nmodel:\n"
                                       "  encoder: {name: mlp}\n")
    with pytest.raises(ConfigError, match=r'dup.yaml is not valid YAML: the key "model" appears twice, on lines 1 '
                                          r"and 4: keep one of them"):
        read_yaml(tmp_path / "dup.yaml")
    (tmp_path / "nested.yaml").write_text("train:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r'the key "lr" appears twice, on lines 2 and 3'):
        read_yaml(tmp_path / "nested.yaml")
    # YAML's merge key still overrides what it merges: that is what it is for, not a repeat.
    (tmp_path / "merge.yaml").write_text("base: &b {lr: 0.1, gradient_clip: 1.0}\ntrain:\n  <<: *b\n  lr: 0.2\n")
    assert read_yaml(tmp_path / "merge.yaml")["train"] == {"lr": 0.2, "gradient_clip": 1.0}
