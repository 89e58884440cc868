"""One rule for an existing export version, the same in `doctags export` and `doctags run`."""

import os
import time

from doctags.cli import main
from doctags_core.config import load_config
from tests.conftest import small_config


def _with_version(tmp_path, reuters_slice, *versions):
    config = small_config(tmp_path, reuters_slice)
    cfg = load_config(config)
    base = os.path.dirname(cfg.export_dir)
    for version in versions:
        os.makedirs(os.path.join(base, str(version)))
        open(os.path.join(base, str(version), "saved_model.pb"), "wb").close()
    return config, cfg


def test_export_and_run_refuse_alike_before_any_work(tmp_path, reuters_slice, capsys):
    config, cfg = _with_version(tmp_path, reuters_slice, 1, 2)
    messages = []
    for command in ("export", "run"):
        started = time.time()
        assert main([command, "--config", config]) == 2
        assert time.time() - started < 5  # refused up front, not after preprocessing
        messages.append(capsys.readouterr().err.split("error: ", 1)[1])
    assert messages[0] == messages[1]
    assert "export version 1 holds a SavedModel" in messages[0]
    assert "--overwrite" in messages[0] and "--set export.version=3" in messages[0]
    assert not os.path.exists(cfg.data_dir)  # run did not start preprocessing


def test_an_empty_version_folder_is_named_as_such(tmp_path, reuters_slice, capsys):
    config, cfg = _with_version(tmp_path, reuters_slice)
    os.makedirs(cfg.export_dir)  # what the old --overwrite left when killed
    assert main(["export", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "exists (without a SavedModel)" in err and "--set export.version=1" not in err


def test_where_everything_is_names_each_artifact_and_the_next_commands(tmp_path, reuters_slice):
    from doctags.cli import where_everything_is

    config, cfg = _with_version(tmp_path, reuters_slice)
    text = where_everything_is(cfg, cfg.export_dir)
    base = os.path.dirname(cfg.export_dir)
    for expected in (
        cfg.data_dir,
        os.path.join(cfg.model_dir, "model.keras"),
        os.path.join(cfg.model_dir, "logs"),
        cfg.export_dir,
        os.path.join(cfg.eval_dir, "metrics_test.json"),
        os.path.join(cfg.eval_dir, "report_test.html"),
        f"predict --model {base} 'text to tag'",
        f"serve --model-base-path {base} --model-name tags",
        f"--logdir {os.path.join(cfg.model_dir, 'logs')}",
    ):
        assert expected in text, expected
