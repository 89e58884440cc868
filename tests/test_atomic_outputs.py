"""Issue 12: training and export outputs survive a kill at any point.

Crashes are simulated by raising at the point of interest (the files checked
are real); `test_export_overwrite_survives_sigkill` kills real `doctags
export --overwrite` processes.
"""

import json
import os
import shutil
import threading

import pytest

from doctags_core import atomic_files, version_publish
from doctags_core.atomic_files import atomic_path, atomic_write, atomic_write_json

VERSION_FILES = ("saved_model.pb", "variables/variables.index", "assets/labels.txt")


class Crash(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler 'recovers' from it."""


def make_version(path, tag: str) -> str:
    """A folder shaped like a SavedModel version, each file saying which one it is."""
    for name in VERSION_FILES:
        os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
        with open(os.path.join(path, name), "w") as f:
            f.write(tag)
    return str(path)


def version_tag(path) -> str | None:
    """The version's tag; "mixed" when files of two versions were read; None if one is missing.

    Mixed is no gap: each file read was whole, but the folders were exchanged
    between two reads.
    """
    try:
        tags = {open(os.path.join(path, name)).read() for name in VERSION_FILES}
    except FileNotFoundError:
        return None
    return tags.pop() if len(tags) == 1 else "mixed"


# --- atomic files ------------------------------------------------------------------
def test_atomic_write_replaces_whole_and_leaves_nothing(tmp_path):
    path = str(tmp_path / "thresholds.json")
    atomic_write_json(path, {"threshold": 0.3})
    atomic_write_json(path, {"threshold": 0.4})
    assert json.load(open(path)) == {"threshold": 0.4}
    assert os.listdir(tmp_path) == ["thresholds.json"]


def test_a_crash_before_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "config.yaml")
    atomic_write(path, "old: 1\n")

    def crash(tmp, target):
        raise Crash

    monkeypatch.setattr(atomic_files, "publish", crash)
    with pytest.raises(Crash):
        atomic_write(path, "new: 2\n" * 1000)
    assert open(path).read() == "old: 1\n"
    assert os.listdir(tmp_path) == ["config.yaml"]  # the temporary file is gone too


def test_a_model_save_killed_midway_leaves_the_previous_model(tmp_path):
    path = str(tmp_path / "model.keras")
    atomic_write(path, b"PK complete model")
    with pytest.raises(Crash), atomic_path(path) as tmp:
        assert tmp.endswith("model.keras") and os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "wb") as f:
            f.write(b"PK" + b"\0" * 7000)  # the 7 KB the issue found
        raise Crash
    assert open(path, "rb").read() == b"PK complete model"
    assert atomic_files.remove_leftovers(str(tmp_path)) == []


def test_leftovers_of_killed_writers_are_removed(tmp_path):
    (tmp_path / ".tmp-0123-model.keras").write_bytes(b"partial")
    (tmp_path / "model.keras").write_bytes(b"whole")
    removed = atomic_files.remove_leftovers(str(tmp_path))
    assert [os.path.basename(p) for p in removed] == [".tmp-0123-model.keras"]
    assert os.listdir(tmp_path) == ["model.keras"]


def test_training_outputs_killed_while_saving(tmp_path, monkeypatch, reuters_slice):
    """A real Keras model: killed in model.save, the old model stays loadable, and
    export refuses with a message saying training did not finish."""
    import keras

    from doctags_core.config import load_config
    from tests.conftest import small_config
    from trainer import export as export_lib
    from trainer import train as train_lib

    cfg = load_config(small_config(tmp_path, reuters_slice))
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    os.makedirs(cfg.model_dir)
    killed_before = os.path.join(cfg.model_dir, ".tmp-0123abcd-model.keras")
    open(killed_before, "wb").write(b"PK" + b"\0" * 7000)  # what a SIGKILL leaves
    train_lib.write_outputs(cfg, model, {"threshold": 0.5}, {"epochs_run": 1})
    assert not os.path.exists(killed_before)
    model_file = os.path.join(cfg.model_dir, "model.keras")
    before = open(model_file, "rb").read()
    export_lib.check_training_outputs(cfg)  # a finished run: nothing missing

    def killed_save(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(before[:7000])
        raise Crash

    monkeypatch.setattr(keras.Model, "save", killed_save)
    with pytest.raises(Crash):
        train_lib.write_outputs(cfg, model, {"threshold": 0.7}, {"epochs_run": 2})
    assert open(model_file, "rb").read() == before
    assert keras.models.load_model(model_file).count_params() == model.count_params()
    assert not [n for n in os.listdir(cfg.model_dir) if n.startswith(".tmp-")]
    with pytest.raises(FileNotFoundError, match="thresholds.json is missing: no finished"):
        export_lib.check_training_outputs(cfg)


# --- publishing a version ----------------------------------------------------------
def test_a_new_version_is_renamed_into_place(tmp_path):
    staging = make_version(version_publish.staging_dir(str(tmp_path)), "new")
    target = str(tmp_path / "1")
    version_publish.publish_version(staging, target, overwrite=False)
    assert version_tag(target) == "new" and os.listdir(tmp_path) == ["1"]
    assert os.stat(target).st_mode & 0o755 == 0o755


def test_an_existing_version_is_refused_with_both_ways_on(tmp_path):
    make_version(tmp_path / "1", "old")
    make_version(tmp_path / "3", "old")
    staging = make_version(version_publish.staging_dir(str(tmp_path)), "new")
    with pytest.raises(FileExistsError) as refused:
        version_publish.publish_version(staging, str(tmp_path / "1"), overwrite=False)
    assert "--overwrite" in str(refused.value)
    assert "--set export.version=4" in str(refused.value)  # after the highest, 3
    assert version_tag(tmp_path / "1") == "old"


def test_overwrite_exchanges_the_folders(tmp_path):
    target = make_version(tmp_path / "1", "old")
    inode = os.stat(target).st_ino
    staging = make_version(version_publish.staging_dir(str(tmp_path)), "new")
    replaced = version_publish.publish_version(staging, target, overwrite=True)
    assert version_tag(target) == "new" and os.stat(target).st_ino != inode
    # The old version waits, whole, under the hidden name for readers still inside it ...
    assert replaced == staging and version_tag(replaced) == "old"
    # ... until the next export clears it.
    assert version_publish.remove_leftovers(str(tmp_path)) == [staging]
    assert os.listdir(tmp_path) == ["1"]


@pytest.mark.parametrize("where", ["before_exchange", "after_exchange"])
def test_overwrite_killed_at_each_point_leaves_a_complete_version(tmp_path, monkeypatch, where):
    target = make_version(tmp_path / "1", "old")
    staging = make_version(version_publish.staging_dir(str(tmp_path)), "new")
    if where == "before_exchange":

        def crash(a, b):
            raise Crash

        monkeypatch.setattr(version_publish, "exchange", crash)
        expected = "old"
    else:
        exchange = version_publish.exchange

        def crash(a, b):
            exchange(a, b)
            raise Crash

        monkeypatch.setattr(version_publish, "exchange", crash)
        expected = "new"
    with pytest.raises(Crash):
        version_publish.publish_version(staging, target, overwrite=True)
    assert version_tag(target) == expected
    leftovers = [n for n in os.listdir(tmp_path) if n != "1"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".export-")
    monkeypatch.undo()
    version_publish.remove_leftovers(str(tmp_path))  # what the next export does first
    assert os.listdir(tmp_path) == ["1"] and version_tag(target) == expected


def _watch(target, stop, seen):
    while not stop.is_set():
        seen.append(version_tag(target))


def test_version_is_never_missing_while_overwritten_again_and_again(tmp_path):
    """A reader polling `1/` while 200 exports overwrite it never finds a file missing;
    the old publish (delete, then rename) is caught by the same reader."""
    target = make_version(tmp_path / "1", "v0")

    def export(staging, target, overwrite):  # as export_model does: clear, then publish
        version_publish.publish_version(staging, target, overwrite)

    def delete_then_rename(staging, target, overwrite):
        shutil.rmtree(target)
        os.rename(staging, target)

    for publish in (export, delete_then_rename):
        stop, seen = threading.Event(), []
        watcher = threading.Thread(target=_watch, args=(target, stop, seen))
        watcher.start()
        for i in range(200):
            version_publish.remove_leftovers(str(tmp_path))
            staging = make_version(version_publish.staging_dir(str(tmp_path)), f"v{i + 1}")
            publish(staging, target, True)
        stop.set()
        watcher.join()
        if publish is export:
            assert len(seen) > 1000 and seen.count(None) == 0
            assert version_tag(target) == "v200"
        else:
            assert seen.count(None) > 0, "the watcher must be able to see a gap"
