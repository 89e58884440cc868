import gzip
import json
import os
import sys

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REUTERS = os.path.join(REPO, "data", "reuters21578", "reuters21578-modapte.jsonl.gz")
sys.path.insert(0, REPO)


def bench_module(name: str):
    """``bench/<name>.py`` loaded as a module (the bench scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"bench_{name}", os.path.join(REPO, "bench", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reuters_records(limit_train=None, limit_test=None):
    """Real Reuters records, optionally the first N of each split."""
    out, seen = [], {"train": 0, "test": 0}
    limits = {"train": limit_train, "test": limit_test}
    with gzip.open(REUTERS, "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            split = rec["split"]
            if limits[split] is not None and seen[split] >= limits[split]:
                continue
            seen[split] += 1
            out.append(rec)
    return out


def write_jsonl(path, records, compress=False):
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    return path


def small_config(tmp_path, input_pattern, **sections):
    """A fast config: tiny model, few epochs; sections override defaults."""
    raw = {
        "name": "test",
        "output_dir": str(tmp_path / "run"),
        "data": {"input_pattern": str(input_pattern), "split_field": "split"},
        "preprocess": {"batch_size": 128, "vocab_size": 5000, "min_count": 1, "num_shards": 2},
        "model": {"family": "dnn", "sequence_length": 64, "embedding_dim": 16, "hidden_units": 16},
        "training": {"batch_size": 32, "epochs": 1, "early_stopping_patience": 1},
        "export": {"model_name": "tags", "version": 1},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="session")
def tf_serving_python():
    """The python of an environment with TF Serving's own TensorFlow release.

    `.ci/run` builds it before the tests (``python -m serving.tf_serving_env``);
    otherwise it is built here on first use, or taken from
    ``DOCTAGS_TF_SERVING_PYTHON``.
    """
    from serving.tf_serving_env import ensure_env

    return os.environ.get("DOCTAGS_TF_SERVING_PYTHON") or ensure_env()


@pytest.fixture(scope="session")
def reuters_slice(tmp_path_factory):
    """300 train + 100 test real Reuters documents as gzip JSONL."""
    d = tmp_path_factory.mktemp("slice")
    return write_jsonl(str(d / "reuters-slice.jsonl.gz"), reuters_records(300, 100), compress=True)


@pytest.fixture(scope="session")
def serving_export(tmp_path_factory, reuters_slice):
    """A tiny model trained on a real Reuters slice and exported once for all serving tests."""
    tmp = tmp_path_factory.mktemp("serving")
    # A few epochs, so that the model tags some texts and comparisons are not vacuous.
    config = small_config(tmp, reuters_slice, training={"epochs": 6, "learning_rate": 0.01})
    from doctags.cli import main
    from doctags_core.config import load_config

    for command in (["preprocess"], ["train"], ["export"]):
        assert main([*command, "--config", config]) == 0
    return load_config(config)
