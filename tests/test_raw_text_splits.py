"""Which splits keep their raw text (``preprocess.raw_text_splits``), on the real Beam job."""

import json

import pytest
import tensorflow as tf
from conftest import reuters_records, small_config

from doctags.cli import main
from doctags_core import schema
from doctags_core.config import ConfigError, config_from_dict, load_config
from doctags_core.data_files import DataError, read_split, shard_files

BASE = {"data": {"input_pattern": ["unused.jsonl"]}}


def _raw_text_of_records(data_dir: str, split: str) -> dict[str, str]:
    """``{id: raw text feature}`` of every record of one split, as written."""
    spec = schema.feature_spec(with_text=True)
    out = {}
    for serialized in tf.data.TFRecordDataset(shard_files(data_dir, split), "GZIP"):
        example = tf.io.parse_single_example(serialized, spec)
        out[example[schema.ID].numpy().decode()] = example[schema.TEXT].numpy().decode()
    return out


def _preprocess(tmp_path, input_pattern, **preprocess) -> str:
    config = small_config(tmp_path, input_pattern, preprocess=preprocess)
    assert main(["preprocess", "--config", config]) == 0
    return load_config(config).data_dir


def test_by_default_only_validation_and_test_records_keep_their_raw_text(reuters_slice, tmp_path):
    data_dir = _preprocess(tmp_path, reuters_slice)
    raw = {r["id"]: r["text"] for r in reuters_records(300, 100)}

    train = _raw_text_of_records(data_dir, "train")
    assert train and set(train.values()) == {""}
    for split in ("validation", "test"):
        kept = _raw_text_of_records(data_dir, split)
        assert kept and all(text == raw[doc_id] for doc_id, text in kept.items())
        assert read_split(data_dir, split)[1] == list(kept.values())

    with pytest.raises(DataError, match="train records hold no raw text.*raw_text_splits"):
        read_split(data_dir, "train")


def test_every_split_keeps_its_raw_text_on_request(reuters_slice, tmp_path):
    data_dir = _preprocess(tmp_path, reuters_slice, raw_text_splits=["train", "validation", "test"])
    raw = {r["id"]: r["text"] for r in reuters_records(300, 100)}
    for split in ("train", "validation", "test"):
        kept = _raw_text_of_records(data_dir, split)
        assert kept and all(text == raw[doc_id] for doc_id, text in kept.items())
    with open(f"{data_dir}/metadata.json") as f:
        saved = json.load(f)["config"]["preprocess"]["raw_text_splits"]
    assert saved == ["train", "validation", "test"]


def test_evaluating_a_split_without_raw_text_is_a_one_line_error(serving_export, tmp_path, capsys):
    cfg = serving_export  # preprocessed with the default: train keeps no raw text
    config = tmp_path / "config.yaml"
    config.write_text(open(f"{cfg.data_dir}/config.yaml").read())
    assert main(["evaluate", "--config", str(config), "--split", "train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "train records hold no raw text" in err[0]
    assert "preprocess.raw_text_splits" in err[0]


@pytest.mark.parametrize("keep, splits", [(True, ("train", "validation", "test")), (False, ())])
def test_older_configs_keep_raw_text_still_load_with_the_same_meaning(keep, splits):
    cfg = config_from_dict({**BASE, "preprocess": {"keep_raw_text": keep}}, check_inputs=False)
    assert cfg.preprocess.raw_text_splits == splits


@pytest.mark.parametrize(
    "preprocess, message",
    [
        ({"raw_text_splits": ["train", "dev"]}, r"preprocess\.raw_text_splits: must list"),
        ({"raw_text_splits": ["test", "test"]}, r"preprocess\.raw_text_splits: must list"),
        (
            {"keep_raw_text": True, "raw_text_splits": []},
            r"preprocess\.keep_raw_text: replaced by preprocess\.raw_text_splits",
        ),
    ],
)
def test_bad_raw_text_splits_name_the_key(preprocess, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({**BASE, "preprocess": preprocess}, check_inputs=False)


def test_the_default_keeps_raw_text_for_evaluation_splits_only():
    assert config_from_dict(BASE, check_inputs=False).preprocess.raw_text_splits == (
        "validation",
        "test",
    )
