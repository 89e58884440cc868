import dataclasses

import pytest

from doctags_core.config import ConfigError, config_from_dict, config_to_yaml, load_config
from tests.conftest import REPO, REUTERS


def base():
    return {"data": {"input_pattern": REUTERS}}


def test_reuters_config_loads_with_absolute_paths():
    cfg = load_config(f"{REPO}/configs/reuters.yaml")
    assert cfg.data.input_pattern == (REUTERS,)
    assert cfg.output_dir == f"{REPO}/runs/reuters"
    assert cfg.data.split_field == "split"
    assert cfg.export_dir == f"{REPO}/runs/reuters/export/reuters/1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "changed"


def test_unknown_key_is_named():
    raw = base()
    raw["training"] = {"epoch": 3}
    with pytest.raises(ConfigError, match=r"training\.epoch\b.*allowed here:.*epochs"):
        config_from_dict(raw)


def test_unknown_top_level_key_is_named():
    raw = base()
    raw["modle"] = {}
    with pytest.raises(ConfigError, match="modle"):
        config_from_dict(raw)


def test_missing_input_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.input_pattern: no file matches"):
        config_from_dict({"data": {"input_pattern": str(tmp_path / "nothing-*.jsonl")}})


def test_missing_input_pattern():
    with pytest.raises(ConfigError, match=r"data\.input_pattern: is required"):
        config_from_dict({})


@pytest.mark.parametrize(
    "section,key,value,message",
    [
        ("training", "batch_size", 0, r"training\.batch_size: must be at least 1"),
        ("training", "batch_size", "64", r"training\.batch_size: expected an integer"),
        ("training", "learning_rate", -1.0, r"training\.learning_rate: must be positive"),
        ("model", "family", "rnn", r"model\.family: must be one of"),
        ("model", "dropout", 1.5, r"model\.dropout"),
        ("data", "validation_fraction", 1.0, r"data\.validation_fraction"),
        ("cleaning", "steps", ["lowercase", "stem"], r"cleaning\.steps\[1\]: unknown step 'stem'"),
        ("preprocess", "keep_raw_text", "yes", r"preprocess\.keep_raw_text: expected true"),
        ("preprocess", "encode_threads", 0, r"preprocess\.encode_threads: must be at least 1"),
        ("threshold", "start", 0.0, r"threshold\.start"),
    ],
)
def test_bad_values_are_named(section, key, value, message):
    raw = base()
    raw.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_overrides_are_validated_too():
    with pytest.raises(ConfigError, match=r"training\.epochs"):
        load_config(f"{REPO}/configs/reuters.yaml", {"training.epochs": 0})
    cfg = load_config(f"{REPO}/configs/reuters.yaml", {"training.epochs": 2})
    assert cfg.training.epochs == 2


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "absent.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(str(bad))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(f"{REPO}/configs/reuters.yaml")
    again = tmp_path / "again.yaml"
    again.write_text(config_to_yaml(cfg))
    assert load_config(str(again)) == cfg
