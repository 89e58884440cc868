"""Server-side dynamic batching: concurrent requests share one model call.

One model call on 64 documents costs far less than 64 calls on one, so
requests that arrive together are merged, run once and split again, as TF
Serving's batching does. A batch closes when it holds the most rows one
model call may take or when ``batch_timeout_micros`` have passed since its first request
arrived; with a timeout of 0, whatever queued up while the model was busy is
batched, which adds no latency when the server is idle.

The limits are TF Serving's (``SharedBatchScheduler`` queue options, as
``tensorflow_serving/servables/tensorflow/bundle_factory_util.h`` sets them
from ``BatchingParameters``): ``max_batch_size`` is the largest request
("task") accepted at all; a larger one is refused with INVALID_ARGUMENT
("Task size N is larger than maximum input batch size M", HTTP 400), since
retrying cannot help. With ``enable_large_batch_splitting`` a request is cut
into model calls of at most ``max_execution_batch_size`` rows and its
outputs joined again; without it a request runs in one model call. Outputs
whose inner dimensions depend on the batch (doctags' padded ``tags``) are
joined by padding with zeros / empty strings. A full queue is UNAVAILABLE
(HTTP 503, "retry later"); a request that would need more batches than the
queue can ever hold is INVALID_ARGUMENT, so the two never look alike.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from serving.errors import ServingError


@dataclass(frozen=True)
class BatchingOptions:
    """The knobs of TF Serving's ``BatchingParameters`` that doctags serve honours.

    Attributes:
        max_batch_size: The largest request, in rows (TF Serving's input
            batch size limit); without splitting also the largest model call.
        batch_timeout_micros: How long the first request of a batch waits for
            company; 0 batches only what is already queued.
        max_enqueued_batches: Queue bound, in batches; beyond it requests are
            refused with UNAVAILABLE (HTTP 503) instead of queueing without bound.
        num_batch_threads: Model calls that may run at the same time.
        enable_large_batch_splitting: Cut requests into model calls of at
            most ``max_execution_batch_size`` rows.
        max_execution_batch_size: Rows per model call with splitting (None:
            ``max_batch_size``, as in TF Serving); ignored without splitting.
        enabled: False runs each request on its own, on the caller's thread.
    """

    max_batch_size: int = 64
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = 2
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None
    enabled: bool = True

    def __post_init__(self):
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"batching {name} must be at least 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError("batching batch_timeout_micros must be >= 0")
        execution = self.max_execution_batch_size
        if execution is not None and not 1 <= execution <= self.max_batch_size:
            raise ValueError(
                f"batching max_execution_batch_size must be between 1 and max_batch_size "
                f"({self.max_batch_size}), got {execution}"
            )

    @property
    def execution_batch_size(self) -> int:
        """Rows per model call at most."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size


@dataclass
class _Task:
    key: tuple
    inputs: dict[str, np.ndarray]
    size: int
    enqueued: float
    future: Future


def _rows(inputs: dict[str, np.ndarray]) -> int:
    return len(next(iter(inputs.values())))


def concat_padded(arrays: list[np.ndarray]) -> np.ndarray:
    """Concatenates along axis 0, padding inner dimensions to the largest."""
    if len(arrays) == 1:
        return arrays[0]
    inner = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
    padded = []
    for a in arrays:
        if a.shape[1:] != inner:
            fill = b"" if a.dtype == object else 0
            out = np.full((a.shape[0],) + inner, fill, dtype=a.dtype)
            out[tuple(slice(0, n) for n in a.shape)] = a
            a = out
        padded.append(a)
    return np.concatenate(padded, axis=0)


class Batcher:
    """Merges concurrent calls of ``run(key, inputs)`` into batched calls.

    Args:
        run: ``run(key, inputs) -> outputs``; every output must have the
            batch as its first dimension. ``key`` groups compatible requests
            (same signature, input names, dtypes and inner shapes).
        options: Batching parameters.
        name: For thread names and messages.
    """

    def __init__(self, run: Callable, options: BatchingOptions, name: str = "batcher"):
        self._run = run
        self.options = options
        self._queue: collections.deque[_Task] = collections.deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self.stats = {"batches": 0, "rows": 0, "largest_batch": 0, "requests": 0}
        self.batch_sizes: collections.Counter[int] = collections.Counter()  # rows -> model calls
        self._threads = []
        if options.enabled:
            for i in range(options.num_batch_threads):
                t = threading.Thread(target=self._worker, name=f"{name}-{i}", daemon=True)
                t.start()
                self._threads.append(t)

    @staticmethod
    def key(signature: str, inputs: dict[str, np.ndarray]) -> tuple:
        """Requests with equal keys can be concatenated."""
        return (signature,) + tuple(
            (k, v.dtype.str, v.shape[1:]) for k, v in sorted(inputs.items())
        )

    def submit(self, key: tuple, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one request through the batches and returns its own outputs.

        Raises:
            ServingError: INVALID_ARGUMENT for a request that can never be
                batched (over ``max_batch_size``, or more batches than the
                queue holds); UNAVAILABLE when the queue is full for now or
                the batcher is closed; whatever ``run`` raised otherwise.
        """
        size = _rows(inputs)
        with self._cond:
            self.stats["requests"] += 1
        if not self.options.enabled:
            self._count(size)
            return self._run(key, inputs)
        step = self._check_fits(size)
        chunks = [{k: v[i : i + step] for k, v in inputs.items()} for i in range(0, size, step)]
        futures = []
        with self._cond:
            if self._closed:
                raise ServingError("UNAVAILABLE", "this model version is being unloaded")
            limit = self.options.max_enqueued_batches * step
            if self._queued_rows + size > limit:
                raise ServingError(
                    "UNAVAILABLE",
                    "The batch scheduling queue to which this task was submitted is full "
                    f"({self._queued_rows} rows queued, room for {limit}); retry later",
                )
            now = time.monotonic()
            for chunk in chunks:
                task = _Task(key, chunk, _rows(chunk), now, Future())
                self._queue.append(task)
                futures.append(task.future)
            self._queued_rows += size
            self._cond.notify_all()
        results = [f.result() for f in futures]
        if len(results) == 1:
            return results[0]
        return {k: concat_padded([r[k] for r in results]) for k in results[0]}

    def _check_fits(self, size: int) -> int:
        """Rows per chunk of a request, or INVALID_ARGUMENT when it can never run.

        TF Serving's message for a request over the input limit, naming it;
        a request that needs more batches than the queue ever holds is
        refused the same way rather than as a full queue, which a client
        would retry forever.
        """
        o = self.options
        if size > o.max_batch_size:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Task size {size} is larger than maximum input batch size {o.max_batch_size} "
                "(max_batch_size); send at most that many instances per request",
            )
        step = o.execution_batch_size
        needed = -(-size // step)
        if needed > o.max_enqueued_batches:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Task size {size} needs {needed} batches of at most {step} rows, more than "
                f"the queue holds (max_enqueued_batches {o.max_enqueued_batches})",
            )
        return step

    def _count(self, rows: int) -> None:
        with self._cond:
            self.stats["batches"] += 1
            self.stats["rows"] += rows
            self.stats["largest_batch"] = max(self.stats["largest_batch"], rows)
            self.batch_sizes[rows] += 1

    def _take(self) -> list[_Task] | None:
        """Blocks until a batch is due, then removes and returns its tasks."""
        timeout = self.options.batch_timeout_micros / 1e6
        limit = self.options.execution_batch_size
        with self._cond:
            while True:
                if not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                first = self._queue[0]
                same = [t for t in self._queue if t.key == first.key]
                rows = sum(t.size for t in same)
                wait = first.enqueued + timeout - time.monotonic()
                if rows < limit and wait > 0 and not self._closed:
                    self._cond.wait(wait)
                    continue
                batch, total = [], 0
                for task in same:
                    if total + task.size > limit:
                        break
                    batch.append(task)
                    total += task.size
                for task in batch:
                    self._queue.remove(task)
                self._queued_rows -= total
                return batch

    def _worker(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self._execute(batch)

    def _execute(self, batch: list[_Task]) -> None:
        total = sum(t.size for t in batch)
        try:
            if len(batch) == 1:
                inputs = batch[0].inputs
            else:
                inputs = {k: np.concatenate([t.inputs[k] for t in batch]) for k in batch[0].inputs}
            outputs = self._run(batch[0].key, inputs)
            for name, value in outputs.items():
                if np.ndim(value) == 0 or len(value) != total:
                    raise ServingError(
                        "INTERNAL", f"output '{name}' has no batch dimension of size {total}"
                    )
        except BaseException as e:  # every waiting caller must be woken  # noqa: BLE001
            for task in batch:
                task.future.set_exception(e)
            return
        self._count(total)
        start = 0
        for task in batch:
            end = start + task.size
            task.future.set_result({k: v[start:end] for k, v in outputs.items()})
            start = end

    def close(self) -> None:
        """Refuses new requests, lets queued ones finish, and stops the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()
