"""Files that appear whole or not at all: write under a temporary name, then rename.

A process killed while it writes (SIGKILL, the OOM killer, a pre-empted VM)
leaves a truncated file under its final name, and the next stage then fails
on it with a confusing message (a 7 KB ``model.keras`` "not found" by
Keras). Every JSON, YAML, CSV, HTML and model file that training, export and
evaluation write goes through here instead: the bytes go to a hidden
temporary name in the same directory, and one rename publishes them. On a
local file system the rename is atomic (and the data is fsynced first); on
object stores (``gs://``) ``tf.io.gfile.rename`` copies one object, which
appears whole. A crash leaves the previous file intact, plus at most one
``.tmp-*`` leftover that `remove_leftovers` clears.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator

TMP_PREFIX = ".tmp-"


def _gfile():
    import tensorflow as tf  # only for remote paths: local writes need no TensorFlow

    return tf.io.gfile


def is_remote(path: str) -> bool:
    """True for ``scheme://`` paths (GCS, S3, HDFS), which only tf.io.gfile can write."""
    return "://" in path


def temporary_name(path: str) -> str:
    """A hidden sibling of ``path`` that keeps its file name as the suffix.

    The suffix matters: Keras only saves to names ending in ``.keras``.
    """
    directory, name = os.path.split(path)
    return os.path.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}")


def _fsync(path: str, directory: bool = False) -> None:
    """Flushes a file (or a directory entry) to disk, so a power cut cannot reorder it."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    if is_remote(path):
        if _gfile().exists(path):
            _gfile().remove(path)
    elif os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def publish(tmp: str, path: str) -> None:
    """Renames a finished temporary file onto ``path`` (replacing what was there)."""
    if is_remote(path):
        _gfile().rename(tmp, path, overwrite=True)
        return
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(os.path.dirname(path) or ".", directory=True)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path to write to; on success it becomes ``path``.

    For writers that want a file name rather than a stream (``model.save``).
    On any exception the temporary file is removed and ``path`` is untouched.
    """
    tmp = temporary_name(path)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write(path: str, data: str | bytes) -> str:
    """Writes ``data`` to ``path`` so that readers see the old or the new file, whole.

    Returns:
        ``path``.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        if is_remote(path):
            with _gfile().GFile(tmp, "wb") as f:
                f.write(raw)
        else:
            with open(tmp, "wb") as f:
                f.write(raw)
    return path


def atomic_write_json(path: str, obj, indent: int = 2) -> str:
    """`atomic_write` of ``obj`` as JSON."""
    return atomic_write(path, json.dumps(obj, indent=indent))


def remove_leftovers(directory: str, prefix: str = TMP_PREFIX) -> list[str]:
    """Deletes what killed writers left in ``directory`` (names starting with ``prefix``).

    Returns:
        The removed paths. Only for directories one process writes at a time.
    """
    if is_remote(directory):
        names = _gfile().listdir(directory) if _gfile().isdir(directory) else []
    else:
        names = os.listdir(directory) if os.path.isdir(directory) else []
    removed = []
    for name in names:
        name = name.rstrip("/")
        if name.startswith(prefix):
            path = os.path.join(directory, name)
            if is_remote(path) and _gfile().isdir(path):
                _gfile().rmtree(path)
            else:
                _remove(path)
            removed.append(path)
    return removed
