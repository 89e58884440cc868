"""Named composite PTransforms of the preprocessing job.

Each composite wraps the pure functions of `records`, `batches` and
`combiners`; every step inside is labelled so that the job graph on any
runner reads like the pipeline description in the README.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import WindowedValue

from beam_preprocess import batches, combiners, sinks
from doctags_core import records
from doctags_core.beam_io import DEAD_LETTER_TAG, NAMESPACE, Outputs, ReadRawRecords
from doctags_core.config import DataConfig, PreprocessConfig

DUPLICATE_GROUP_TAG = "duplicate_group"
TOKEN_COUNTS_TAG = "token_counts"


class _ParseBatch(beam.DoFn):
    def __init__(self, cfg: DataConfig):
        self._cfg = cfg

    def process(self, record_batch, duplicated=None):
        docs, dead = batches.parse_batch(record_batch, self._cfg)
        for letter in dead:
            beam.metrics.Metrics.counter(NAMESPACE, f"dead_letter_{letter['reason']}").inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)
        if docs and duplicated is not None and len(duplicated):
            hashes = np.array([records.normalized_text_hash(d.text) for d in docs], np.uint64)
            pos = np.minimum(np.searchsorted(duplicated, hashes), len(duplicated) - 1)
            suspect = duplicated[pos] == hashes
            for doc, hashed, is_dup in zip(docs, hashes.tolist(), suspect.tolist()):
                if is_dup:
                    yield beam.pvalue.TaggedOutput(DUPLICATE_GROUP_TAG, (hashed, doc))
            docs = [doc for doc, is_dup in zip(docs, suspect.tolist()) if not is_dup]
        if docs:
            beam.metrics.Metrics.counter(NAMESPACE, "documents_parsed").inc(len(docs))
            yield docs


def keep_first_of_group(hash_docs):
    """Keeps one document of a duplicate group; the others are dead letters.

    The kept one is the smallest by ``(id, text, labels)``, so every runner
    and every re-run keeps the same document.
    """
    _, docs = hash_docs
    docs = sorted(docs, key=lambda d: (d.doc_id, d.text, d.labels))
    yield docs[0]
    for doc in docs[1:]:
        beam.metrics.Metrics.counter(NAMESPACE, f"dead_letter_{records.DUPLICATE}").inc()
        raw = {"id": doc.doc_id, "text": doc.text, "labels": list(doc.labels)}
        detail = f"same normalized text as document {docs[0].doc_id!r}"
        yield beam.pvalue.TaggedOutput(
            DEAD_LETTER_TAG, records.dead_letter("", records.DUPLICATE, detail, raw)
        )


def _hashes_of_batch(record_batch, cfg: DataConfig):
    docs, _ = batches.parse_batch(record_batch, cfg)
    yield np.array([records.normalized_text_hash(d.text) for d in docs], dtype=np.uint64)


class FindDuplicates(beam.PTransform):
    """The normalized-text hashes that occur more than once (a first pass).

    Reads the input on its own (a second, independent read) so that the
    main pass can take the result as a side input without the runner having
    to hold the whole corpus until it is ready. Holds 16 bytes per distinct
    document while combining.
    """

    def __init__(self, cfg: DataConfig, batch_size: int):
        super().__init__()
        self._cfg = cfg
        self._batch_size = batch_size

    def expand(self, pbegin):
        read = pbegin | "ReadRawRecords" >> ReadRawRecords(self._cfg, self._batch_size)
        return (
            read["records"]
            | "HashTexts" >> beam.FlatMap(_hashes_of_batch, self._cfg)
            | "DuplicatedHashes" >> beam.CombineGlobally(combiners.DuplicateHashesFn())
        )


class ParseDocuments(beam.PTransform):
    """Parses batches of raw records; bad records go to ``dead_letter``.

    With ``duplicated`` (the output of `FindDuplicates`), documents whose
    normalized text occurs more than once are grouped by hash and only one
    of each group is kept; the others are dead letters with reason
    ``duplicate``. Only those documents are grouped, never the corpus.
    """

    def __init__(self, cfg: DataConfig, batch_size: int, duplicated=None):
        super().__init__()
        self._cfg = cfg
        self._batch_size = batch_size
        self._duplicated = duplicated

    def expand(self, raw_batches):
        side = []
        tags = [DEAD_LETTER_TAG]
        if self._duplicated is not None:
            side = [beam.pvalue.AsSingleton(self._duplicated)]
            tags.append(DUPLICATE_GROUP_TAG)
        parsed = raw_batches | "ParseBatch" >> beam.ParDo(
            _ParseBatch(self._cfg), *side
        ).with_outputs(*tags, main="docs")
        if self._duplicated is None:
            return Outputs(docs=parsed.docs, **{DEAD_LETTER_TAG: parsed[DEAD_LETTER_TAG]})
        kept = (
            parsed[DUPLICATE_GROUP_TAG]
            | "GroupDuplicates" >> beam.GroupByKey()
            | "KeepFirstOfGroup"
            >> beam.ParDo(keep_first_of_group).with_outputs(DEAD_LETTER_TAG, main="kept")
        )
        kept_batches = kept.kept | "BatchKept" >> beam.BatchElements(
            min_batch_size=1, max_batch_size=self._batch_size
        )
        return Outputs(
            docs=(parsed.docs, kept_batches) | "AllDocs" >> beam.Flatten(),
            **{
                DEAD_LETTER_TAG: (parsed[DEAD_LETTER_TAG], kept[DEAD_LETTER_TAG])
                | "AllParseDeadLetters" >> beam.Flatten()
            },
        )


_GC_YOUNG_THRESHOLD = 20_000  # Python's default is 2,000 allocations


def _tune_garbage_collector():
    """Keeps the cyclic garbage collector off the worker's long-lived objects.

    A worker that has imported TensorFlow and Beam and traced its graphs
    holds over a million long-lived container objects, and each full
    collection walked all of them; the job's own objects are short-lived
    batches, most freed by reference counting before any collection sees
    them if collections of the youngest generation are rarer. So, once the
    encoders are built: a last full collection (no garbage is frozen), every
    object alive moved out of the collector's reach (``gc.freeze``), and a
    young-generation threshold of 20,000 allocations. Measured with
    ``gc.callbacks`` over a 100k-document job: 1.6-1.7 s of CPU in the
    collector before, 1.05-1.14 s after (two runs each); memory stays
    bounded (the collector still runs, over fewer objects).
    """
    import gc

    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, middle, old)


def _in_global_window(value):
    return WindowedValue(value, window.GlobalWindow().max_timestamp(), [window.GlobalWindow()])


class _EncodeBatch(beam.DoFn):
    """Encodes batches on helper threads, a few ahead; emits token counts per bundle.

    TensorFlow releases the GIL while a graph runs, so while this thread
    hands finished batches on to the fused steps after it (routing, framing,
    statistics) and reads and parses the next ones, ``encode_threads``
    batches are encoded at once, each by its own `BatchEncoder` (own graph,
    own count table): Python and TF work overlap on every core. Output order
    does not matter downstream; the batches still in flight are emitted when
    the bundle finishes.
    """

    def __init__(self, steps, cfg: DataConfig, preprocess: PreprocessConfig):
        self._steps = tuple(steps)
        self._cfg = cfg
        self._preprocess = preprocess
        self._encoders = None

    def setup(self):
        import queue
        from concurrent.futures import ThreadPoolExecutor

        from beam_preprocess.encode import make_batch_encoder

        p = self._preprocess
        threads = p.encode_threads
        parts = 2 if threads == 1 else 1  # one thread: let its graph use two cores
        self._encoders = [
            make_batch_encoder(self._steps, p.keep_raw_text, p.vocab_shards, parts)
            for _ in range(threads)
        ]
        self._idle = queue.SimpleQueue()
        for encoder in self._encoders:
            self._idle.put(encoder)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="encode")
        _tune_garbage_collector()

    def _encode(self, docs):
        encoder = self._idle.get()
        try:
            return batches.encode_batch(docs, encoder, self._cfg)
        finally:
            self._idle.put(encoder)

    def start_bundle(self):
        from collections import deque

        self._pending = deque()
        for encoder in self._encoders:
            encoder.drain_counts()  # a retried bundle starts from zero

    def process(self, docs):
        self._pending.append(self._pool.submit(self._encode, docs))
        if len(self._pending) > len(self._encoders):
            yield self._pending.popleft().result()

    def finish_bundle(self):
        while self._pending:
            yield _in_global_window(self._pending.popleft().result())
        for encoder in self._encoders:
            for shard_counts in batches.token_count_shards(encoder.drain_counts()):
                yield beam.pvalue.TaggedOutput(TOKEN_COUNTS_TAG, _in_global_window(shard_counts))

    def teardown(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)


class CleanAndEncode(beam.PTransform):
    """Shared TF cleaning, tokenizing, Example serialization and token counts.

    One traced TF graph per batch (`beam_preprocess.encode`); splits are
    assigned by id hash just before, because counts cover train only.

    Returns:
        ``batches``: `batches.DocBatch` elements; ``token_counts``:
        ``(shard, (tokens, counts, document_counts))``, one per shard and
        bundle.
    """

    def __init__(self, steps, cfg: DataConfig, preprocess: PreprocessConfig):
        super().__init__()
        self._steps = steps
        self._cfg = cfg
        self._preprocess = preprocess

    def expand(self, doc_batches):
        out = doc_batches | "EncodeBatch" >> beam.ParDo(
            _EncodeBatch(self._steps, self._cfg, self._preprocess)
        ).with_outputs(TOKEN_COUNTS_TAG, main="batches")
        return Outputs(batches=out.batches, token_counts=out[TOKEN_COUNTS_TAG])


class WriteExamples(beam.PTransform):
    """Writes gzip TFRecord shards of tf.train.Example, one directory per split.

    Batches go to the shuffle-free `sinks.WriteTFRecordBatches`; the output
    is ``{split: {"files": n, "examples": n}}``.
    """

    def __init__(self, data_dir: str, cfg: PreprocessConfig):
        super().__init__()
        self._data_dir = data_dir
        self._cfg = cfg

    def expand(self, encoded):
        return (
            encoded
            | "ExamplesBySplit" >> beam.FlatMap(batches.examples_by_split)
            | "WriteTFRecords"
            >> sinks.WriteTFRecordBatches(
                self._data_dir,
                schema_splits(),
                self._cfg.num_shards,
                self._cfg.compression_level,
            )
        )


def schema_splits():
    """The three split names, in output order."""
    from doctags_core.splits import SPLITS

    return SPLITS


class ComputeVocabulary(beam.PTransform):
    """Top-K train tokens by count, with document frequencies.

    Input: ``(shard, (tokens, counts, document_counts))`` tables, already
    aggregated per bundle by the encoder. Shards are combined in parallel by
    key, pruned to their own top-K, and merged into the global top-K. No
    element is ever a single token.
    """

    def __init__(self, cfg: PreprocessConfig):
        super().__init__()
        self._cfg = cfg

    def expand(self, token_counts):
        cfg = self._cfg
        return (
            token_counts
            | "MergeCountsPerShard" >> beam.CombinePerKey(combiners.MergeTokenCountsFn())
            | "TopKPerShard"
            >> beam.Map(lambda kv: combiners.top_tokens(kv[1], cfg.vocab_size, cfg.min_count))
            | "TopKGlobal" >> beam.CombineGlobally(combiners.TopTokensFn(cfg.vocab_size))
        )


class ComputeStatistics(beam.PTransform):
    """Documents per split, label counts and token-length histogram."""

    def expand(self, encoded):
        return (
            encoded
            | "BatchStatistics" >> beam.Map(batches.batch_statistics)
            | "MergeStatistics" >> beam.CombineGlobally(combiners.StatisticsFn())
        )
