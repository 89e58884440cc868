"""Per-worker input shards, multi-step calls and per-replica metrics, in process.

Real gzip TFRecords of real Reuters documents (written with the schema's
reference encoder), the trainer's own vectorizer and label encoder, and the
tf.distribute InputContext that `distribute_datasets_from_function` hands
each worker: what two workers would read, without starting a cluster.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from doctags_core import schema
from doctags_core.config import ConfigError, config_from_dict
from tests.conftest import REUTERS, reuters_records
from trainer import data as data_lib
from trainer import epoch_data
from trainer.loop import steps_in_call
from trainer.sharding import check_layout, file_order, plan_epoch
from trainer.steps import confusion_counts

FILE_SIZES = [37, 0, 52, 11, 64]  # uneven, one empty file
SEED = 42


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """Five gzip TFRecord files of real Reuters documents, ids doc-0000...."""
    records = reuters_records(limit_train=sum(FILE_SIZES), limit_test=0)
    labels = sorted({lb for r in records for lb in r["labels"]})
    d = tmp_path_factory.mktemp("shards")
    n = 0
    for i, size in enumerate(FILE_SIZES):
        path = str(d / f"part-{i:05d}-of-{len(FILE_SIZES):05d}{schema.RECORD_SUFFIX}")
        with tf.io.TFRecordWriter(path, options="GZIP") as w:
            for r in records[n : n + size]:
                tokens = [t.encode() for t in r["text"].lower().split()]
                w.write(schema.make_example(f"doc-{n:04d}", tokens, r["labels"], None))
                n += 1
    vocabulary = sorted({t for r in records for t in r["text"].lower().split()})[:2000]
    vectorizer = data_lib.make_vectorizer(vocabulary, 16)
    encoder = data_lib.make_label_encoder(labels)
    return epoch_data.TrainSplit.from_pattern(
        str(d / f"part-*{schema.RECORD_SUFFIX}"), vectorizer, encoder
    )


class IdParse:
    """Parses only the ids: which documents a batch holds."""

    def __call__(self, serialized):
        ex = tf.io.parse_example(serialized, {schema.ID: tf.io.FixedLenFeature([], tf.string)})
        return (ex[schema.ID],)


def with_ids(split):
    return epoch_data.TrainSplit(split.files, split.counts, IdParse())


def worker_steps(split, epoch, workers, shards, global_batch, replicas=1, skip=0):
    """Per worker, per step, the ids each of its replicas gets."""
    plan = split.plan(epoch, SEED, shards, global_batch)
    out = []
    for w in range(workers):
        context = tf.distribute.InputContext(workers, w, workers * replicas)
        ds = epoch_data.worker_batches(with_ids(split), plan, context, SEED, 16, skip)
        elements = [e[0].numpy().tolist() for e in ds]
        out.append([elements[i : i + replicas] for i in range(0, len(elements), replicas)])
    return plan, out


def step_sets(per_worker):
    """The set of ids of each global step."""
    steps = len(per_worker[0])
    return [
        sorted(i for worker in per_worker for replica in worker[s] for i in replica)
        for s in range(steps)
    ]


def test_record_counts_are_counted_once_per_file(split):
    assert list(split.counts) == FILE_SIZES
    assert split.examples == sum(FILE_SIZES)


def test_plan_cuts_the_epoch_into_equal_disjoint_record_ranges():
    files = [f"f{i}" for i in range(len(FILE_SIZES))]
    for shards in (1, 2, 3, 4, 8):
        plan = plan_epoch(files, FILE_SIZES, SEED, 0, shards, 8 * shards)
        sizes = [plan.shard_examples(d) for d in range(shards)]
        assert sum(sizes) == sum(FILE_SIZES) and max(sizes) - min(sizes) <= 1
        covered = {f: [] for f in files}
        for ranges in plan.shards:
            for r in ranges:
                covered[r.path].append((r.start, r.start + r.count))
        for f, size in zip(files, FILE_SIZES):  # every record exactly once
            assert sum(b - a for a, b in covered[f]) == size
            spans = sorted(covered[f])
            assert all(a1 <= b0 for (_, a1), (b0, _) in zip(spans, spans[1:]))
        assert plan.steps == math.ceil(sum(FILE_SIZES) / (8 * shards))


def test_fewer_files_than_workers_split_by_records():
    plan = plan_epoch(["only"], [10], SEED, 0, 4, 4)
    assert [[(r.start, r.count) for r in s] for s in plan.shards] == [
        [(0, 2)],
        [(2, 3)],
        [(5, 2)],
        [(7, 3)],
    ]


def test_file_order_differs_between_epochs_and_repeats_on_a_rerun():
    orders = [file_order(20, SEED, epoch) for epoch in range(4)]
    assert all(sorted(o) == list(range(20)) for o in orders)
    assert len({tuple(o) for o in orders}) == 4
    assert orders == [file_order(20, SEED, epoch) for epoch in range(4)]
    assert file_order(20, SEED + 1, 0) != orders[0]


def test_two_workers_read_disjoint_examples_whose_union_is_the_epoch(split):
    everything = {f"doc-{i:04d}" for i in range(sum(FILE_SIZES))}
    for global_batch in (8, 10, 32):  # 164 records: every global batch leaves a short step
        plan, (w0, w1) = worker_steps(split, 0, 2, 2, global_batch)
        seen0 = [i for step in w0 for replica in step for i in replica]
        seen1 = [i for step in w1 for replica in step for i in replica]
        assert not set(seen0) & set(seen1)
        assert len(seen0) + len(seen1) == len(everything)
        assert {i.decode() for i in seen0 + seen1} == everything
        # The same number of steps on both (collectives), full steps of the
        # global batch except the last.
        assert len(w0) == len(w1) == plan.steps == math.ceil(len(everything) / global_batch)
        sizes = [len(s) for s in step_sets([w0, w1])]
        assert sizes[:-1] == [global_batch] * (plan.steps - 1) and 0 < sizes[-1] <= global_batch
        # Each worker reads about half: its own shard, not the whole split.
        assert abs(len(seen0) - len(seen1)) <= 1


def test_layouts_with_the_same_shards_see_the_same_examples_every_step(split):
    _, one_device = worker_steps(split, 1, 1, 2, 10)
    _, two_devices = worker_steps(split, 1, 1, 2, 10, replicas=2)
    _, two_workers = worker_steps(split, 1, 2, 2, 10)
    _, four_replicas = worker_steps(split, 1, 2, 2, 10, replicas=2)
    reference = step_sets(one_device)
    assert step_sets(two_devices) == reference
    assert step_sets(two_workers) == reference
    assert step_sets(four_replicas) == reference


def test_epoch_order_differs_between_epochs_and_repeats_on_a_rerun(split):
    epochs = [worker_steps(split, e, 2, 2, 10)[1] for e in range(3)]
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs[0] == worker_steps(split, 0, 2, 2, 10)[1]


def test_a_resumed_epoch_continues_at_the_same_batch(split):
    _, full = worker_steps(split, 2, 2, 2, 10)
    _, resumed = worker_steps(split, 2, 2, 2, 10, skip=7)
    assert resumed == [worker[7:] for worker in full]


def test_parsed_batches_and_empty_padding(split):
    plan = split.plan(0, SEED, 3, 27)  # 164 = 54 + 55 + 55 in 7 steps of 9 per shard
    batches = list(epoch_data.shard_batches(split, plan, 0, SEED, 16))
    assert len(batches) == plan.steps == 7  # shard 0 ran out after 6 batches
    ids, y = batches[-1]
    assert ids.shape[0] == 0 and ids.shape[1] == 16 and y.shape[0] == 0
    assert y.shape[1] == batches[0][1].shape[1]
    assert sum(int(b[0].shape[0]) for b in batches) == plan.shard_examples(0) == 54


def test_layout_rules():
    check_layout(32, 2, 2)
    with pytest.raises(ValueError, match="multiple of the 2 worker"):
        check_layout(32, 3, 2)
    with pytest.raises(ValueError, match="global batch 30 must be a multiple"):
        check_layout(30, 4, 2)
    with pytest.raises(ConfigError, match=r"training\.input_shards: must divide"):
        config_from_dict({"data": {"input_pattern": REUTERS}, "training": {"input_shards": 3}})
    with pytest.raises(ConfigError, match=r"training\.steps_per_call: must be at least 1"):
        config_from_dict({"data": {"input_pattern": REUTERS}, "training": {"steps_per_call": 0}})


def test_calls_never_cross_a_checkpoint_or_the_epoch_end():
    def calls(start, steps, per_call, every, short_last=False):
        out, step = [], start
        while step < steps:
            n = steps_in_call(step, steps, per_call, every, short_last)
            step += n
            out.append(step)
        return out

    assert calls(0, 23, 16, 0) == [16, 23]
    assert calls(0, 23, 4, 6) == [4, 6, 10, 12, 16, 18, 22, 23]
    assert calls(7, 23, 16, 6) == [12, 18, 23]  # resumed after a checkpoint at 6... and 7
    assert calls(0, 9, 1, 2) == list(range(1, 10))
    # Every checkpoint step is the end of a call, whatever the call size.
    for per_call in (1, 3, 16, 100):
        assert {6, 12, 18} <= set(calls(0, 23, per_call, 6))
    # A short last step is a call of its own (multi-worker sparse gathers).
    assert calls(0, 23, 16, 0, short_last=True) == [16, 22, 23]
    assert calls(0, 23, 100, 0, short_last=True) == [22, 23]
    assert calls(22, 23, 16, 0, short_last=True) == [23]


def test_confusion_counts_are_keras_auc_counts():
    rng = np.random.default_rng(0)
    y = (rng.random((64, 30)) < 0.1).astype("float32")
    # Scores on and next to the bucket edges as well as random ones.
    edges = np.arange(200, dtype="float32") / 199
    p = np.concatenate([rng.random(64 * 30 - 400), edges, np.nextafter(edges, 1)])
    p = p.astype("float32").reshape(64, 30)
    auc = keras.metrics.AUC(curve="PR")
    auc.update_state(y, p)
    ours = confusion_counts(tf.constant(y), tf.constant(p)).numpy()
    theirs = [auc.true_positives, auc.false_positives, auc.true_negatives, auc.false_negatives]
    for mine, var in zip(ours, theirs):
        np.testing.assert_array_equal(mine, keras.ops.convert_to_numpy(var))
