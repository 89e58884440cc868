"""Versions of one model under a base path: load, serve the newest, retire the rest.

Like TF Serving's default ("latest") version policy: the model base path is
polled; when a higher numbered version directory with a ``saved_model.pb``
appears it is loaded and warmed up (state LOADING) while the current version
keeps answering; then it becomes AVAILABLE and takes new requests, and the
old version turns UNLOADING. It is unloaded (END) only once the last request
holding it has finished, so no request in flight fails during a swap.

A version that fails to load (or to warm up) is retried on later polls, up
to ``load_retries`` times, while the current version keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass

import tensorflow as tf

from serving.batching import Batcher, BatchingOptions
from serving.errors import ServingError, not_found
from serving.servable import LoadedVersion

log = logging.getLogger(__name__)

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass
class VersionStatus:
    """What GetModelStatus reports for a version."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


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


def list_versions(base_path: str) -> dict[int, str]:
    """``{version: dir}`` of numbered subdirectories holding a SavedModel."""
    if not tf.io.gfile.isdir(base_path):
        return {}
    found = {}
    for name in tf.io.gfile.listdir(base_path):
        name = name.rstrip("/")
        path = os.path.join(base_path, name)
        if name.isdigit() and tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
            found[int(name)] = path
    return found


class ModelManager:
    """Serves the newest version of one model found under ``base_path``.

    Args:
        base_path: Directory holding numbered version directories.
        model_name: The name requests must use.
        batching: Dynamic batching parameters (one batcher per version).
        poll_seconds: Interval between scans of ``base_path``; 0 disables
            polling after the first scan.
        load_retries: Attempts per version before it is given up.
        warmup: Replay ``assets.extra`` warmup requests before serving.
    """

    def __init__(
        self,
        base_path: str,
        model_name: str,
        batching: BatchingOptions | None = None,
        poll_seconds: float = 1.0,
        load_retries: int = 3,
        warmup: bool = True,
    ):
        self.base_path = base_path
        self.model_name = model_name
        self.batching = batching or BatchingOptions()
        self.poll_seconds = poll_seconds
        self.load_retries = load_retries
        self.warmup = warmup
        self._lock = threading.Condition()
        self._servables: dict[int, Servable] = {}  # AVAILABLE or UNLOADING
        self._latest: Servable | None = None
        self._status: dict[int, VersionStatus] = {}
        self._failures: dict[int, int] = {}
        self._stats: dict[int, dict] = {}  # batcher counters, kept after unloading
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Loads the newest version now, then keeps polling in the background.

        Raises:
            FileNotFoundError: if the base path does not exist.
        """
        if not tf.io.gfile.isdir(self.base_path):
            raise FileNotFoundError(f"model base path {self.base_path} is not a directory")
        self.poll()
        if self.poll_seconds > 0:
            self._poller = threading.Thread(target=self._poll_loop, name="version-poller")
            self._poller.daemon = True
            self._poller.start()

    def stop(self) -> None:
        """Stops polling and unloads every version once its requests are done."""
        self._stop.set()
        if self._poller:
            self._poller.join()
        with self._lock:
            self._latest = None
            for servable in list(self._servables.values()):
                self._retire_locked(servable)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # a bad scan must not kill the poller
                log.exception("polling %s failed", self.base_path)

    # version policy ------------------------------------------------------
    def poll(self) -> None:
        """One scan of the base path: load the newest version, retire the others."""
        present = list_versions(self.base_path)
        with self._lock:
            current = self._latest.version if self._latest else None
        if not present:
            if current is not None:
                log.warning("%s: no version left on disk; unloading %s", self.base_path, current)
                with self._lock:
                    self._latest = None
                    for servable in list(self._servables.values()):
                        self._retire_locked(servable)
            return
        target = max(present)
        if target != current and self._failures.get(target, 0) < self.load_retries:
            self._load(target, present[target])
        with self._lock:
            for version, servable in list(self._servables.items()):
                if servable is not self._latest and version not in present:
                    self._retire_locked(servable)

    def _load(self, version: int, path: str) -> None:
        with self._lock:
            self._status[version] = VersionStatus(version, LOADING)
        started = time.monotonic()
        try:
            loaded = LoadedVersion(path, version)
            warmed = loaded.warmup() if self.warmup else 0
        except Exception as e:  # any load failure leaves the old version serving
            self._failures[version] = self._failures.get(version, 0) + 1
            message = f"loading {path} failed: {type(e).__name__}: {str(e).splitlines()[0]}"
            log.error("%s (attempt %d)", message, self._failures[version])
            with self._lock:
                self._status[version] = VersionStatus(version, END, "UNKNOWN", message)
            return
        servable = Servable(loaded, self.batching, self.model_name)
        with self._lock:
            self._stats[version] = servable.batcher.stats
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
        # idle batch threads) is immediate.
        servable.batcher.close()
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


__all__ = ["ModelManager", "ServingError", "VersionStatus", "list_versions"]
