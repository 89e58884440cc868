"""Finished iterators are destroyed on the release thread, never on the training loop's.

The stall itself (up to a minute when a distributed iterator is destroyed,
`doctags_core.iterator_release`) is sporadic and needs epochs of tens of
seconds, so it is measured by ``bench/research/iterator_release.py``, not
here. These tests check what makes the fix work: the destructor runs on
the release thread, for plain objects and real distributed iterators
(partly read or exhausted), later iterators are unaffected, and the loop
hands over every epoch's training and validation iterator, as does the
raw-text reader of evaluation.
"""

import subprocess
import sys
import threading
import weakref

import pytest
import tensorflow as tf

from doctags.cli import main
from doctags_core import data_files, iterator_release
from doctags_core.config import load_config
from tests.conftest import REPO, small_config


def _finalized_on(obj) -> list[int]:
    """A list that receives the id of the thread that finalizes ``obj``."""
    threads: list[int] = []
    weakref.finalize(obj, lambda: threads.append(threading.get_ident()))
    return threads


def _release_thread_id() -> int:
    (worker,) = [t for t in threading.enumerate() if t.name == "doctags-iterator-release"]
    return worker.ident


def test_a_released_object_is_destroyed_on_the_release_thread():
    class Held:
        pass

    obj = Held()
    threads = _finalized_on(obj)
    iterator_release.release_in_background(obj)
    del obj
    iterator_release.wait_for_releases()
    assert threads == [_release_thread_id()]
    assert threads[0] != threading.get_ident()


@pytest.mark.parametrize("read", [3, None], ids=["partly-read", "exhausted"])
def test_a_distributed_iterator_is_destroyed_there_and_the_next_one_reads_everything(read):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    dataset = tf.data.Dataset.range(40).map(lambda i: i * 2, num_parallel_calls=2).batch(4)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    distributed = strategy.experimental_distribute_dataset(dataset)

    iterator = iter(distributed)
    seen = [next(iterator) for _ in range(read)] if read else list(iterator)
    assert len(seen) == (read or 10)
    threads = _finalized_on(iterator)
    iterator_release.release_in_background(iterator)
    del iterator
    iterator_release.wait_for_releases()
    assert threads == [_release_thread_id()]

    again = [int(v) for batch in distributed for v in batch.numpy()]
    assert again == [2 * i for i in range(40)]


def test_training_and_the_split_reader_hand_over_their_finished_iterators(
    tmp_path, reuters_slice, monkeypatch
):
    import trainer.loop

    handed = []
    release = iterator_release.release_in_background

    def record(obj):
        handed.append((type(obj).__name__, _finalized_on(obj)))
        release(obj)

    # The loop's own hand-over, and every `iterate_and_release` loop's.
    monkeypatch.setattr(trainer.loop, "release_in_background", record)
    monkeypatch.setattr(iterator_release, "release_in_background", record)
    config = small_config(tmp_path, reuters_slice, training={"epochs": 2})
    assert main(["preprocess", "--config", config]) == 0
    assert main(["train", "--config", config]) == 0
    test_documents = sum(
        len(ids)
        for ids, _, _ in data_files.split_batches(
            load_config(config).data_dir, "test", batch_size=16
        )
    )
    iterator_release.wait_for_releases()

    # Per epoch: the training iterator, then validation's; then the
    # validation scores the threshold is chosen on; then the raw-text
    # reader of evaluation, once it has read the whole test split.
    kinds = [kind for kind, _ in handed]
    epochs = ["DistributedIterator", "DistributedIterator"] * 2
    assert kinds == epochs + ["OwnedIterator", "OwnedIterator"], kinds
    assert test_documents == 100
    release_thread = _release_thread_id()
    assert all(threads == [release_thread] for _, threads in handed)


EXITS_WHILE_RELEASING = """
import sys, time
from doctags_core import iterator_release

class SlowToRelease:
    def __del__(self):
        time.sleep(0.5)  # a destructor that outlives the main thread
        with open(sys.argv[1], "w") as f:
            f.write("released")

iterator_release.release_in_background(SlowToRelease())
"""


def test_a_process_exits_only_after_its_pending_releases(tmp_path):
    """A release still running at exit must finish first (see the module's docstring).

    Without the wait, the release thread is cut off during interpreter
    finalization: here its destructor never completes; in a real run the
    forced unwind through TensorFlow's frames aborted the process.
    """
    marker = tmp_path / "marker"
    done = subprocess.run(
        [sys.executable, "-c", EXITS_WHILE_RELEASING, str(marker)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "released"
