"""Releases finished tf.data iterators on a background thread, so the loop never waits for them.

Why: under TensorFlow 2.21, destroying a distributed dataset iterator can
block the calling thread for up to a minute. The destructor joins the
iterator's tf.data autotuning thread, and that thread does not wake when
the iterator is cancelled: it sleeps out its current optimization period,
which doubles from 10 ms up to 60 s while the iterator lives. Native
stacks of a stalled `doctags train` showed the main thread in
``RootDataset::Iterator::~Iterator`` -> ``~LogicalThreadWrapper`` (a join)
while the ``Model::OptimizeLoop`` threads sat in their timed wait. A
45-second epoch then stalls 36.9 s, which is 81.9 s (the next optimization:
10 ms x (2**13 - 1)) minus the epoch's own time; `doctags run` on Reuters
lost 225 to 463 s of its 760 to 1,006 s this way (bench/research/FINDINGS.md
section 5e; `bench/research/iterator_release.py` reproduces it).

Turning autotuning off in the pipeline's own options did not remove the
stall (36.9 s again in a 45-second-epoch reproduction, and gdb still showed an
``OptimizeLoop`` thread): the per-device dataset that ``tf.distribute``
builds on top of it has default options. The wait is idle (no CPU) and
releases the GIL, so handing the last reference to a daemon thread lets
training go on while the old iterator's threads wind down. Its input
pipeline (shuffle buffers, parallel map threads) is destroyed before the
join that waits, so what lingers is one sleeping thread per released
iterator.

The process waits for pending releases when it exits (an ``atexit``
handler): a release thread whose destructor returned during interpreter
finalization was killed by a forced unwind through TensorFlow's C++
frames, and the process aborted ("terminate called after throwing an
instance of ... FATAL: exception not rethrown", SIGABRT, in a two-worker
test right after training). A process therefore waits at most once, at
exit, for the last iterators it released, which have usually finished by
then; before, it waited at the end of every epoch.
"""

from __future__ import annotations

import atexit
import queue
import threading

_pending: queue.Queue = queue.Queue()
_worker: threading.Thread | None = None
_start_lock = threading.Lock()


def _release_forever() -> None:
    while True:
        item = _pending.get()
        del item  # the last reference: its destructor runs (and waits) here
        _pending.task_done()


def _ensure_worker() -> None:
    global _worker
    with _start_lock:
        if _worker is None:  # the loop never returns: destructors' exceptions are only printed
            _worker = threading.Thread(
                target=_release_forever, name="doctags-iterator-release", daemon=True
            )
            _worker.start()
            atexit.register(wait_for_releases)  # see the module docstring: exit must not race it


def release_in_background(obj) -> None:
    """Drops ``obj`` on the release thread instead of the caller's.

    The caller must hold no other reference once this returns (``del`` its
    variable, or return from the frame that held it); otherwise the object
    is destroyed wherever its last reference goes, as usual.
    """
    _ensure_worker()
    _pending.put(obj)


def iterate_and_release(dataset):
    """The elements of ``dataset``; once they are all read, its iterator goes to the release thread.

    For a whole-dataset loop (``for batch in iterate_and_release(ds)``). A
    consumer that stops early closes this generator, and the iterator is
    then destroyed on the consumer's thread, as a plain loop would.
    """
    iterator = iter(dataset)
    yield from iterator
    release_in_background(iterator)
    del iterator


def wait_for_releases() -> None:
    """Blocks until everything handed to `release_in_background` has been destroyed."""
    _pending.join()
