"""Versions of one model under a base path: load, serve the newest, retire the rest.

Like TF Serving's default ("latest") version policy: the model base path is
polled; when a higher numbered version directory with a ``saved_model.pb``
appears it is loaded with TF Serving's session-based loader and warmed up
through its batcher (state LOADING) while the current version keeps
answering; then it becomes AVAILABLE and takes new requests, and the old
version turns UNLOADING. It is unloaded (END) only once the last request
holding it has finished, so no request in flight fails during a swap.

A version that fails to load or to warm up is retried like TF Serving's
``--max_num_load_retries`` (default 5) every ``--load_retry_interval_micros``
(default 60 s), so a directory still being copied is served once complete;
meanwhile, and after the last attempt (END with the loader's message), the
newest version that did load serves. Unlike TF Serving, which aspires only
the newest version, this also holds at start: a broken newest version does
not leave the model without any version.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass

from doctags_core.export_contract import list_versions
from serving.batching import Batcher, BatchingOptions
from serving.errors import ServingError, not_found
from serving.servable import LoadedVersion, error_code_of, error_text

log = logging.getLogger(__name__)

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass
class VersionStatus:
    """What GetModelStatus reports for a version."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


@dataclass
class _Attempts:
    """Failed load attempts of one version, and when the next one is due."""

    tries: int = 0
    next_at: float = 0.0
    given_up: bool = False


class Servable:
    """A loaded version with its batcher and the count of requests holding it."""

    def __init__(self, loaded: LoadedVersion, batching: BatchingOptions, model_name: str):
        self.loaded = loaded
        self.version = loaded.version
        self.batcher = Batcher(
            lambda key, inputs: loaded.run(key[0], inputs),
            batching,
            name=f"{model_name}-v{loaded.version}",
        )
        self.holders = 0

    def predict(self, signature: str, inputs):
        """Runs a validated request through this version's batcher."""
        return self.batcher.submit(Batcher.key(signature, inputs), inputs)

    def warmup(self) -> int:
        """Replays the warmup records through the batcher; returns their count.

        TF Serving replays them through its batching session, so a record
        it could not batch (over ``max_batch_size``) fails the load there
        and here alike.
        """
        count = 0
        for signature, inputs in self.loaded.warmup_requests():
            self.predict(signature, inputs)
            count += 1
        return count

    def close(self) -> None:
        """Stops the batch threads, then frees the session."""
        self.batcher.close()
        self.loaded.close()


class ModelManager:
    """Serves the newest loadable version of one model found under ``base_path``.

    Args:
        base_path: Directory holding numbered version directories.
        model_name: The name requests must use.
        batching: Dynamic batching parameters (one batcher per version).
        poll_seconds: Interval between scans of ``base_path``; 0 disables
            scanning after the first (failed loads are still retried).
        max_num_load_retries: Attempts after the first before a version is
            given up (TF Serving's flag of that name).
        load_retry_interval: Seconds between attempts
            (``--load_retry_interval_micros`` / 1e6).
        warmup: Replay ``assets.extra`` warmup requests before serving.
    """

    def __init__(
        self,
        base_path: str,
        model_name: str,
        batching: BatchingOptions | None = None,
        poll_seconds: float = 1.0,
        max_num_load_retries: int = 5,
        load_retry_interval: float = 60.0,
        warmup: bool = True,
    ):
        if max_num_load_retries < 0 or load_retry_interval < 0:
            raise ValueError("max_num_load_retries and load_retry_interval must be >= 0")
        self.base_path = base_path
        self.model_name = model_name
        self.batching = batching or BatchingOptions()
        self.poll_seconds = poll_seconds
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval = load_retry_interval
        self.warmup = warmup
        self._lock = threading.Condition()
        self._poll_lock = threading.Lock()  # one scan at a time (poller, retries, tests)
        self._servables: dict[int, Servable] = {}  # AVAILABLE or UNLOADING
        self._latest: Servable | None = None
        self._status: dict[int, VersionStatus] = {}
        self._attempts: dict[int, _Attempts] = {}
        self._present: dict[int, str] = {}  # the last scan
        self._stats: dict[int, dict] = {}  # batcher counters, kept after unloading
        self._batch_sizes: dict[int, collections.Counter] = {}
        self.load_counts: collections.Counter[tuple[int, str]] = collections.Counter()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._poller: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Loads the newest loadable version now, then polls and retries in the background.

        Raises:
            FileNotFoundError: if the base path does not exist.
        """
        import tensorflow as tf

        if not tf.io.gfile.isdir(self.base_path):
            raise FileNotFoundError(f"model base path {self.base_path} is not a directory")
        self.poll()
        self._poller = threading.Thread(target=self._loop, name="version-poller", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        """Stops polling and unloads every version once its requests are done."""
        self._stop.set()
        self._wake.set()
        if self._poller:
            self._poller.join()
        with self._lock:
            self._latest = None
            for servable in list(self._servables.values()):
                self._retire_locked(servable)

    def _next_retry_at(self) -> float:
        pending = [a.next_at for a in self._attempts.values() if not a.given_up]
        return min(pending, default=math.inf)

    def _loop(self) -> None:
        """Scans every ``poll_seconds`` and runs retries when due; never dies of one failure."""
        polling = self.poll_seconds > 0
        next_poll = time.monotonic() + self.poll_seconds if polling else math.inf
        while not self._stop.is_set():
            wake_at = min(next_poll, self._next_retry_at())
            timeout = None if wake_at == math.inf else max(0.0, wake_at - time.monotonic())
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                return
            now = time.monotonic()
            try:
                if now >= next_poll:
                    next_poll = now + self.poll_seconds
                    self.poll()
                elif now >= self._next_retry_at():
                    with self._poll_lock:
                        self._converge(dict(self._present))
            except Exception:  # a bad scan must not kill the poller
                log.exception("polling %s failed", self.base_path)

    # version policy ------------------------------------------------------
    def poll(self) -> None:
        """One scan of the base path: serve the newest loadable version, retire the others."""
        with self._poll_lock:
            present = list_versions(self.base_path)
            self._present = present
            for version in [v for v in self._attempts if v not in present]:
                del self._attempts[version]  # gone from disk: a new copy gets fresh attempts
            if not present:
                self._unload_everything()
                return
            self._converge(present)

    def _unload_everything(self) -> None:
        with self._lock:
            if self._latest is not None:
                log.warning("%s: no version left on disk; unloading", self.base_path)
            self._latest = None
            for servable in list(self._servables.values()):
                self._retire_locked(servable)

    def _converge(self, present: dict[int, str]) -> None:
        """Tries versions newest first until one serves: the current one, or one that loads."""
        with self._lock:
            current = self._latest.version if self._latest else None
        for version in sorted(present, reverse=True):
            if version == current or (self._due(version) and self._load(version, present[version])):
                break
        with self._lock:
            for version, servable in list(self._servables.items()):
                if servable is not self._latest and version not in present:
                    self._retire_locked(servable)

    def _due(self, version: int) -> bool:
        attempts = self._attempts.get(version)
        if attempts is None:
            return True
        return not attempts.given_up and time.monotonic() >= attempts.next_at

    def _load(self, version: int, path: str) -> bool:
        """One load attempt; True when the version went AVAILABLE."""
        with self._lock:
            self._status[version] = VersionStatus(version, LOADING)
        started = time.monotonic()
        stage, servable = "session loader", None
        try:
            servable = Servable(LoadedVersion(path, version), self.batching, self.model_name)
            stage = "warmup"
            warmed = servable.warmup() if self.warmup else 0
        except Exception as e:  # any load failure leaves the current version serving  # noqa: BLE001
            if servable is not None:
                servable.close()
            self._failed(version, path, stage, e)
            return False
        self._attempts.pop(version, None)
        self.load_counts[(version, "OK")] += 1
        with self._lock:
            self._stats[version] = servable.batcher.stats
            self._batch_sizes[version] = servable.batcher.batch_sizes
            old = self._latest
            self._servables[version] = servable
            self._latest = servable
            self._status[version] = VersionStatus(version, AVAILABLE)
            if old is not None:
                self._retire_locked(old)
        log.info(
            "model %s version %d AVAILABLE (loaded in %.1fs, %d warmup requests)",
            self.model_name,
            version,
            time.monotonic() - started,
            warmed,
        )
        return True

    def _failed(self, version: int, path: str, stage: str, error: Exception) -> None:
        """Records a failed attempt: LOADING until the retries are used up, then END."""
        if isinstance(error, ServingError):
            code, text = error.code, error.message
        else:
            code, text = error_code_of(error), f"{type(error).__name__}: {error_text(error)}"
        attempts = self._attempts.setdefault(version, _Attempts())
        attempts.tries += 1
        self.load_counts[(version, code)] += 1
        total = self.max_num_load_retries + 1
        message = f"loading {path} failed ({stage}, attempt {attempts.tries} of {total}): {text}"
        if attempts.tries >= total:
            attempts.given_up = True
            log.error("%s; giving up on version %d", message, version)
            state = END
        else:
            attempts.next_at = time.monotonic() + self.load_retry_interval
            message += f"; retrying in {self.load_retry_interval:g}s"
            log.error("%s", message)
            state = LOADING
        with self._lock:
            self._status[version] = VersionStatus(version, state, code, message)
        self._wake.set()

    def _retire_locked(self, servable: Servable) -> None:
        """Marks a version UNLOADING; it is unloaded when no request holds it."""
        if self._status[servable.version].state in (UNLOADING, END):
            return
        self._status[servable.version] = VersionStatus(servable.version, UNLOADING)
        if servable.holders == 0:
            self._unload_locked(servable)

    def _unload_locked(self, servable: Servable) -> None:
        self._servables.pop(servable.version, None)
        self._status[servable.version] = VersionStatus(servable.version, END)
        # No request holds it, so its queue is empty and closing (joining the
        # idle batch threads, then freeing the session) is immediate.
        servable.close()
        log.info("model %s version %d unloaded", self.model_name, servable.version)

    # requests ------------------------------------------------------------
    def check_name(self, name: str) -> None:
        """Raises NOT_FOUND for a model this server does not serve."""
        if name != self.model_name:
            raise not_found(f"Servable not found for request: Latest({name})")

    @contextlib.contextmanager
    def acquire(self, name: str, version: int | None = None):
        """Holds a servable for the duration of one request.

        Raises:
            ServingError: NOT_FOUND for an unknown name, a version that is not
                AVAILABLE, or when no version has loaded yet.
        """
        self.check_name(name)
        with self._lock:
            if version is None:
                servable = self._latest
                if servable is None:
                    raise not_found(f"Servable not found for request: Latest({name})")
            else:
                servable = self._servables.get(version)
                if servable is None or self._status[version].state != AVAILABLE:
                    raise not_found(f"Servable not found for request: Specific({name}, {version})")
            servable.holders += 1
        try:
            yield servable
        finally:
            with self._lock:
                servable.holders -= 1
                retiring = self._status[servable.version].state == UNLOADING
                if retiring and servable.holders == 0:
                    self._unload_locked(servable)

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Version states, newest first (one version when ``version`` is given).

        Raises:
            ServingError: NOT_FOUND for an unknown name or version.
        """
        self.check_name(name)
        with self._lock:
            if version is not None:
                if version not in self._status:
                    raise not_found(
                        f"Could not find version {version} of model {name}; "
                        f"known versions: {sorted(self._status)}"
                    )
                return [self._status[version]]
            if not self._status:
                raise not_found(f"Could not find any versions of model {name}")
            return [self._status[v] for v in sorted(self._status, reverse=True)]

    def all_statuses(self) -> list[VersionStatus]:
        """Every version's state, newest first (empty before the first scan)."""
        with self._lock:
            return [self._status[v] for v in sorted(self._status, reverse=True)]

    def wait_until_available(self, version: int, timeout: float = 60.0) -> None:
        """Blocks until ``version`` is AVAILABLE (for tests and scripts).

        Raises:
            TimeoutError: if it is not available in time.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                status = self._status.get(version)
                if status and status.state == AVAILABLE:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"version {version} not AVAILABLE after {timeout}s: {status}")

    def batching_stats(self) -> dict[int, dict]:
        """Per-version batcher counters (batches, rows, largest batch, requests)."""
        with self._lock:
            return {v: dict(stats) for v, stats in self._stats.items()}

    def batch_sizes(self) -> collections.Counter:
        """``{rows: model calls}`` over every version since the start (for the metrics)."""
        total: collections.Counter[int] = collections.Counter()
        with self._lock:
            for sizes in self._batch_sizes.values():
                total.update(sizes)
        return total


__all__ = ["ModelManager", "ServingError", "VersionStatus"]
