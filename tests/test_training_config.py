"""Fast checks of the training settings, TF_CONFIG handling and checkpoint ownership."""

import dataclasses
import json
import os

import pytest
import tensorflow as tf

from doctags_core.config import ConfigError, config_from_dict
from tests.conftest import REUTERS
from trainer import checkpoint, tf_config
from trainer.train import global_batch_size, scaled_learning_rate


def config(tmp_path=None, **training):
    raw = {"data": {"input_pattern": REUTERS}, "training": training}
    if tmp_path is not None:
        raw["output_dir"] = str(tmp_path / "run")
    return config_from_dict(raw)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("mixed_precision", "float16", r"training\.mixed_precision: must be one of"),
        ("jit_compile", "yes", r"training\.jit_compile: expected true or false"),
        ("per_replica_batch_size", -1, r"training\.per_replica_batch_size: must be >= 0"),
        ("learning_rate_scaling", "sqrt", r"training\.learning_rate_scaling: must be one of"),
        ("checkpoint_every_steps", -5, r"training\.checkpoint_every_steps: must be >= 0"),
    ],
)
def test_accelerator_and_checkpoint_settings_are_validated(key, value, message):
    with pytest.raises(ConfigError, match=message):
        config(**{key: value})


@pytest.mark.parametrize(
    "value,message",
    [
        (
            {"sample_weights": "inverse"},
            r"loss\.sample_weights: must be one of \('none', 'balanced'\)",
        ),
        ({"sample_weights": True}, r"loss\.sample_weights: expected a string"),
        ({"sample_weight_cap": 0.5}, r"loss\.sample_weight_cap: must be >= 1"),
        ({"sample_weight_cap": "30"}, r"loss\.sample_weight_cap: expected a number"),
    ],
)
def test_sample_weight_settings_are_validated(value, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"data": {"input_pattern": REUTERS}, "loss": value})


def test_sample_weights_default_to_none_and_accept_balanced_without_cap():
    assert config().loss.sample_weights == "none"
    raw = {"data": {"input_pattern": REUTERS}}
    loss = config_from_dict({**raw, "loss": {"sample_weights": "balanced"}}).loss
    assert (loss.sample_weights, loss.sample_weight_cap) == ("balanced", 30.0)
    loss = config_from_dict({**raw, "loss": {"sample_weight_cap": None}}).loss
    assert loss.sample_weight_cap is None


def test_global_batch_and_learning_rate_scaling():
    t = config(batch_size=64, learning_rate=0.002).training
    assert global_batch_size(t, replicas=4) == 64  # batch_size is global
    assert scaled_learning_rate(t, 64) == 0.002
    t = dataclasses.replace(t, per_replica_batch_size=32)
    assert global_batch_size(t, replicas=4) == 128
    assert scaled_learning_rate(t, 128) == 0.002  # "none": as configured
    t = dataclasses.replace(t, learning_rate_scaling="linear")
    assert scaled_learning_rate(t, 128) == pytest.approx(0.004)  # 2x batch -> 2x lr


def _tf_config(cluster, task_type, index):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_tf_config_roles():
    assert tf_config.parse(None) == tf_config.ClusterRole()
    assert not tf_config.parse(_tf_config({"worker": ["a:1"]}, "worker", 0)).multi_worker
    # The Kubeflow operator's shape for Worker-only TFJobs: worker 0 is the chief.
    workers = {"worker": ["job-worker-0.ns.svc:2222", "job-worker-1.ns.svc:2222"]}
    first = tf_config.parse(_tf_config(workers, "worker", 0))
    second = tf_config.parse(_tf_config(workers, "worker", 1))
    assert (first.multi_worker, first.is_chief, first.num_workers) == (True, True, 2)
    assert (second.is_chief, second.task_index) == (False, 1)
    # With an explicit chief, worker 0 is not the chief.
    cluster = {"chief": ["c:1"], "worker": ["w:1", "w:2"]}
    assert tf_config.parse(_tf_config(cluster, "chief", 0)).is_chief
    role = tf_config.parse(_tf_config(cluster, "worker", 0))
    assert (role.is_chief, role.num_workers) == (False, 3)


@pytest.mark.parametrize(
    "raw,message",
    [
        ("{not json", "not valid JSON"),
        (_tf_config({"worker": ["a:1", "b:1"], "ps": ["p:1"]}, "ps", 0), "chief' and 'worker"),
        (_tf_config({"worker": ["a:1", "b:1"]}, "worker", 2), "not in its cluster"),
    ],
)
def test_bad_tf_config_is_rejected(raw, message):
    with pytest.raises(ValueError, match=message):
        tf_config.parse(raw)


def test_indexed_job_tf_config():
    raw = tf_config.indexed_job_tf_config(1, "train", "workers", 3, port=2222)
    spec = json.loads(raw)
    assert spec["cluster"]["worker"] == [f"train-{i}.workers:2222" for i in range(3)]
    assert spec["task"] == {"type": "worker", "index": 1}
    assert not tf_config.parse(raw).is_chief
    with pytest.raises(ValueError, match="outside"):
        tf_config.indexed_job_tf_config(3, "train", "workers", 3)


def _variables():
    return {"state": tf.Module(), "w": tf.Variable([1.0, 2.0])}


def test_backup_of_another_config_is_discarded_not_resumed(tmp_path):
    chief = tf_config.ClusterRole()
    first = config(tmp_path, epochs=3)
    v = tf.Variable([1.0, 2.0])
    checkpoint.Backup(first, chief, w=v).save(step=7)
    assert checkpoint.Backup(first, chief, w=v).restore() is not None  # same config resumes

    second = config(tmp_path, epochs=4)  # same model_dir, another config
    backup = checkpoint.Backup(second, chief, w=v)
    assert backup.restore() is None
    parent = os.path.dirname(checkpoint.backup_directory(first))
    assert os.listdir(parent) == [checkpoint.config_digest(second)]
    assert checkpoint.backup_directory(first) != checkpoint.backup_directory(second)


def test_non_chief_saves_to_a_temporary_directory_and_removes_it(tmp_path, monkeypatch):
    scratch = tmp_path / "worker-tmp"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    cfg = config(tmp_path)
    worker = tf_config.ClusterRole("worker", 1, 2, False)
    backup = checkpoint.Backup(cfg, worker, w=tf.Variable([3.0]))
    backup.save(step=1)
    assert list(scratch.iterdir()) == []
    assert not os.path.exists(cfg.model_dir)  # nothing in the shared output
    assert backup.restore() is None


def test_train_command_on_a_non_chief_worker_prints_no_metrics(monkeypatch, capsys):
    from doctags import cli
    from trainer import train as train_module

    result = train_module.TrainResult("", float("nan"), {}, 3, 12.0, chief=False)
    monkeypatch.setattr(train_module, "train", lambda cfg: result)
    assert cli.cmd_train(config(), None) is result
    assert capsys.readouterr().out == "train: 3 epochs in 12s (worker, not chief)\n"
