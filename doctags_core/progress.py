"""Live progress of a Beam job: records read and written, dead letters so far.

The FnApiRunner returns its metrics only when the job is done, so the
DoFns count here as well (`add`, per batch: a lock and an add). A process
that runs the job in-process (the DirectRunner's ``in_memory`` mode, the
default) reports through `reporting`: a line redrawn about once a second
at a terminal, or one log line every 30 s when stderr is a log file or a
pipe, as training reports per epoch. A worker process of another runner
(``multi_processing``, Dataflow, Flink) has no `reporting` block: its
first `add` starts a log-only reporter there, so its progress lands in the
worker logs.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time

log = logging.getLogger(__name__)

READ = "records read"
WRITTEN = "written"
DEAD = "dead letters"

TERMINAL_SECONDS = 1.0
LOG_SECONDS = 30.0

_lock = threading.Lock()
_counts: dict[str, int] = {}
_reporter: _Reporter | None = None


def add(name: str, n: int = 1) -> None:
    """Counts ``n`` more of ``name`` (`READ`, `WRITTEN` or `DEAD`)."""
    global _reporter
    with _lock:
        _counts[name] = _counts.get(name, 0) + n
        if _reporter is None:  # a worker process: report to its logs
            _reporter = _Reporter("worker", LOG_SECONDS, None)
            _reporter.start()


def snapshot() -> dict[str, int]:
    """The counts so far."""
    with _lock:
        return dict(_counts)


def format_line(label: str, counts: dict, seconds: float) -> str:
    """``preprocess: 12,000 records read (1,180/s), ...`` for the counts after ``seconds``."""
    rate = max(seconds, 1e-9)
    read, written, dead = (counts.get(k, 0) for k in (READ, WRITTEN, DEAD))
    return (
        f"{label}: {read:,} records read ({read / rate:,.0f}/s), "
        f"{written:,} written ({written / rate:,.0f}/s), {dead:,} dead letters, {seconds:.0f}s"
    )


class _Reporter(threading.Thread):
    """Writes a progress line every ``interval`` seconds while counts change.

    With ``stream`` (a terminal) the line is redrawn in place; without it,
    each line is a log record.
    """

    def __init__(self, label: str, interval: float, stream):
        super().__init__(name="progress", daemon=True)
        self.label, self.interval, self.stream = label, interval, stream
        self.started = time.monotonic()
        self._stop_event = threading.Event()
        self._last: dict | None = None
        self.drawn = False

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.report()

    def report(self) -> None:
        counts = snapshot()
        if counts == self._last:
            return
        self._last = counts
        line = format_line(self.label, counts, time.monotonic() - self.started)
        if self.stream is None:
            log.info("%s", line)
        else:
            self.stream.write("\r\x1b[2K" + line)
            self.stream.flush()
            self.drawn = True

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        if self.stream is not None and self.drawn:
            self.stream.write("\r\x1b[2K")  # the summary that follows replaces the line
            self.stream.flush()


@contextlib.contextmanager
def reporting(label: str, terminal: bool | None = None, stream=None, interval: float | None = None):
    """Reports the job's progress while the block runs (in this process).

    Args:
        label: What the line starts with (``preprocess``).
        terminal: Whether a person watches stderr (None: ask stderr). A
            terminal gets a line redrawn in place, anything else log lines.
        stream: Where to draw the redrawn line (default stdout when it is a
            terminal, else stderr).
        interval: Seconds between lines (default: `TERMINAL_SECONDS` at a
            terminal, `LOG_SECONDS` in logs).
    """
    global _reporter
    if terminal is None:
        terminal = sys.stderr.isatty()
    if terminal and stream is None:
        # Drawn where the summary that replaces it is printed (stdout) when that
        # is the terminal too: stderr reaches it through doctags' log filter
        # process, so its last erase could land after the summary line.
        stream = sys.stdout if sys.stdout.isatty() else sys.stderr
    if not terminal:
        stream = None
    if interval is None:
        interval = TERMINAL_SECONDS if stream is not None else LOG_SECONDS
    reporter = _Reporter(label, interval, stream)
    with _lock:
        previous = _reporter
        _counts.clear()
        _reporter = reporter
    if previous is not None:  # a worker reporter of this process (a job before): one voice
        previous.stop()
    reporter.start()
    try:
        yield reporter
    finally:
        reporter.stop()
        with _lock:
            _reporter = None
