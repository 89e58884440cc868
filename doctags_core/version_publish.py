"""Publishing a SavedModel version so that a server watching the base path never sees a gap.

TF Serving (and `doctags serve`) poll ``base_path`` for numeric folders
and load each new number once. An export therefore writes its version
under a hidden staging name (``.export-*``: never a number, so never
loaded) and publishes it with one rename. Replacing an existing version
(``--overwrite``) used to delete the old folder and then rename the new one
in: killed between the two, ``1/`` was gone and the model sat in a hidden
folder forever. Here the staging folder and the version folder are
*exchanged* in one system call (Linux ``renameat2(RENAME_EXCHANGE)``), so
``1/`` always names a complete SavedModel, old or new. The old one, now
under the staging name, is left there: a reader that was inside it when
the names swapped (a server loading, a copy) finishes reading whole files.
The next export deletes it, with any ``.export-*`` a killed export left.

What a server sees: a new version number is loaded while the current one
serves. A replaced version keeps its number, so a server that already
loaded it keeps serving the old model until it restarts; publish a new
number (``export.version``) to roll a live server forward.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import tempfile

from doctags_core import atomic_files
from doctags_core import export_contract as contract

log = logging.getLogger(__name__)

STAGING_PREFIX = ".export-"
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def _renameat2(source: str, target: str, flags: int) -> None:
    """Linux ``renameat2``; raises OSError (ENOSYS/EINVAL where unsupported)."""
    libc = ctypes.CDLL(None, use_errno=True)
    call = getattr(libc, "renameat2", None)
    if call is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if call(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), source, None, target)


def exchange(a: str, b: str) -> bool:
    """Swaps two directories atomically; False where the system cannot.

    Both names exist before and after: at no instant does either path
    resolve to nothing or to a mix of the two.
    """
    try:
        _renameat2(a, b, _RENAME_EXCHANGE)
    except OSError as e:
        if e.errno in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            return False
        raise
    return True


def staging_dir(base_path: str) -> str:
    """A new hidden folder beside the versions, on the same file system as them."""
    os.makedirs(base_path, exist_ok=True)
    return tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=base_path)


def remove_leftovers(base_path: str) -> list[str]:
    """Deletes staging folders of killed exports (and of replaced versions).

    One export at a time per model base path: a concurrent export's staging
    folder would be deleted too.
    """
    removed = atomic_files.remove_leftovers(base_path, STAGING_PREFIX)
    for path in removed:
        log.info("removed %s, left by an interrupted export", path)
    return removed


def holds_saved_model(version_dir: str) -> bool:
    """True when the folder has a ``saved_model.pb`` (what a server looks for)."""
    return os.path.exists(os.path.join(version_dir, contract.SAVED_MODEL_FILE))


def next_version(base_path: str) -> int:
    """The number after every numeric folder there, complete or not (1 when there is none).

    Reads the local disk without TensorFlow, so `doctags run` can refuse in
    milliseconds.
    """
    names = os.listdir(base_path) if os.path.isdir(base_path) else []
    return max((int(n) for n in names if n.isdigit()), default=0) + 1


def conflict_message(target: str) -> str | None:
    """Why ``target`` cannot be written without ``--overwrite``, or None when it can.

    The one rule of `doctags export` and `doctags run`: an existing version
    is never replaced unless asked, and the message names both ways on.
    """
    if not os.path.lexists(target):
        return None
    base_path, version = os.path.split(target)
    what = "holds a SavedModel" if holds_saved_model(target) else "exists (without a SavedModel)"
    return (
        f"export version {version} {what}: {target}. Pass --overwrite to replace it "
        f"(a server that loaded version {version} keeps serving it until restarted), "
        f"or --set export.version={next_version(base_path)} to publish a new version "
        "(servers load the highest)"
    )


def _publish_new(staging: str, target: str) -> None:
    """Renames staging to a version that does not exist; never replaces one."""
    try:
        _renameat2(staging, target, _RENAME_NOREPLACE)
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise FileExistsError(conflict_message(target)) from e
        if e.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise
        if os.path.lexists(target):  # pragma: no cover - systems without renameat2
            raise FileExistsError(conflict_message(target)) from e
        os.rename(staging, target)


def _replace(staging: str, target: str) -> str:
    """Puts staging at ``target``; returns where the old version now is (deleted later)."""
    if exchange(staging, target):
        return staging
    # Not Linux, or an old kernel: two renames, with an instant without the version.
    log.warning("no atomic directory exchange here: %s is briefly absent", target)
    aside = staging + "-old"
    os.rename(target, aside)
    os.rename(staging, target)
    return aside


def publish_version(staging: str, target: str, overwrite: bool) -> str:
    """Makes the finished ``staging`` folder the version folder ``target``.

    Args:
        staging: A complete version (SavedModel, assets, ``assets.extra``)
            made by `staging_dir` beside ``target``.
        target: ``base_path/VERSION``.
        overwrite: Replace an existing version (atomically) instead of refusing.

    Returns:
        Where the replaced version now is (a hidden ``.export-*`` folder the
        next export deletes), or None when there was none.

    Raises:
        FileExistsError: when ``target`` exists and ``overwrite`` is False.
    """
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide it from a server's user
    if os.path.lexists(target):
        if not overwrite:
            raise FileExistsError(conflict_message(target))
        replaced = _replace(staging, target)
        log.info("replaced %s; the old version waits in %s for the next export", target, replaced)
        return replaced
    _publish_new(staging, target)
    return None
