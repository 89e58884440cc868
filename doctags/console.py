"""What the ``doctags`` command shows at a terminal: its own lines, others' on ``-v``.

Two kinds of chatter reach a terminal besides doctags' own lines:

- Python loggers of the libraries (Apache Beam's type-hint INFO lines and
  "apitools not found", TensorFlow's and absl's Python logs, warnings).
  `configure_logging` lets doctags' loggers through at INFO and the others
  only at ERROR, unless ``-v``.
- Native logs written straight to file descriptor 2 by TensorFlow's C++
  code: oneDNN and CUDA probing lines ("Could not find cuda drivers", "failed
  call to cuInit"), each library's "All log messages before
  absl::InitializeLog() is called" banner. ``TF_CPP_MIN_LOG_LEVEL`` does not
  silence the lines logged before absl is initialised (measured with
  TensorFlow 2.21), so at the default level `NativeLogFilter` runs stderr
  through a small child process that drops lines of that shape (absl
  ``I``/``W`` lines, CUDA-probing ``E`` lines) and passes everything else,
  errors included. A child process, not a thread: a fatal native error
  aborts this process, and its last words must still reach the terminal.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys

OWN_LOGGERS = ("doctags", "doctags_core", "beam_preprocess", "trainer", "serving", "evaluation")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The filter child: drops native log noise, passes the rest as it comes.
_FILTER_SOURCE = r"""
import os, re
noise = re.compile(
    rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+:\d+\] "
    rb"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+:\d+\] .*(?:cuInit|CUDA|cuda)"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: )"
)
pending = b""
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    lines = (pending + chunk).split(b"\n")
    pending = lines.pop()
    out = [line + b"\n" for line in lines if not noise.match(line)]
    if pending.startswith(b"\r"):  # a progress line redrawn in place: show it now
        out.append(pending)
        pending = b""
    if out:
        os.write(1, b"".join(out))
if pending and not noise.match(pending):
    os.write(1, pending)
"""


class _OwnLinesOnly(logging.Filter):
    """doctags' records at any level; other libraries' only from ERROR up."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] in OWN_LOGGERS or record.levelno >= logging.ERROR


def configure_logging(verbose: bool) -> None:
    """One stderr handler; the libraries' records only with ``verbose`` (or errors).

    Like ``logging.basicConfig``, a process whose root logger already has
    handlers of its own (a test runner's) keeps them and gets none added.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "doctags", False)]:
        root.removeHandler(old)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.doctags = True
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    if not verbose:
        handler.addFilter(_OwnLinesOnly())
    root.addHandler(handler)
    logging.captureWarnings(True)  # Python warnings become records of "py.warnings"


class NativeLogFilter:
    """Runs this process's file descriptor 2 through the filter child until `close`."""

    def __init__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._child = subprocess.Popen(
            [sys.executable, "-c", _FILTER_SOURCE], stdin=subprocess.PIPE, stdout=self._saved
        )
        os.dup2(self._child.stdin.fileno(), 2)
        self._child.stdin.close()  # fd 2 is now this process's only handle on the pipe
        atexit.register(self.close)

    def close(self) -> None:
        """Restores stderr and waits for the child to pass on what is left."""
        if self._child is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved, 2)
        os.close(self._saved)
        try:
            self._child.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a subprocess of ours still holds the pipe
            pass
        self._child = None


def stderr_is_terminal() -> bool:
    """Whether a person watches stderr (checked before any filter is installed)."""
    try:
        return os.isatty(2)
    except OSError:
        return False


def set_native_log_level(verbose: bool) -> None:
    """TensorFlow's C++ log level: everything with ``-v``, else errors only.

    A level the user set in the environment is kept. Must run before
    TensorFlow is imported.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in _USER_ENV:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else "2"


_USER_ENV = {k for k in ("TF_CPP_MIN_LOG_LEVEL",) if k in os.environ}
