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
from doctags_core import progress, records
from doctags_core.beam_io import DEAD_LETTER_TAG, NAMESPACE, Outputs, ReadRawRecords
from doctags_core.config import DataConfig, PreprocessConfig

DUPLICATE_GROUP_TAG = "duplicate_group"
ID_GROUP_TAG = "id_group"
FIELD_COUNTS_TAG = "field_counts"
TOKEN_COUNTS_TAG = "token_counts"


def _count_dead(letter: dict) -> None:
    beam.metrics.Metrics.counter(NAMESPACE, f"dead_letter_{letter['reason']}").inc()
    progress.add(progress.DEAD)


def _suspects(keys: list[int], repeated) -> list[bool]:
    """Which of the uint64 ``keys`` are in the sorted array ``repeated``."""
    if repeated is None or not len(repeated) or not keys:
        return [False] * len(keys)
    hashes = np.array(keys, np.uint64)
    pos = np.minimum(np.searchsorted(repeated, hashes), len(repeated) - 1)
    return (repeated[pos] == hashes).tolist()


class _ParseBatch(beam.DoFn):
    """Parses a batch; routes documents whose id or text repeats to their groups."""

    def __init__(self, cfg: DataConfig, limit: records.TextLimit | None):
        self._cfg = cfg
        self._limit = limit

    def process(self, record_batch, repeated_ids=None, repeated_texts=None):
        docs, dead, fields = batches.parse_batch(record_batch, self._cfg, self._limit)
        for letter in dead:
            _count_dead(letter)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)
        if fields:
            yield beam.pvalue.TaggedOutput(FIELD_COUNTS_TAG, fields)
        # Most corpora repeat no id: then no document needs its id hashed.
        if repeated_ids is not None and len(repeated_ids) and docs:
            by_id = _suspects([records.id_hash(d.doc_id) for d in docs], repeated_ids)
            for doc, is_dup in zip(docs, by_id):
                if is_dup:
                    yield beam.pvalue.TaggedOutput(ID_GROUP_TAG, (doc.doc_id, doc))
            docs = [doc for doc, is_dup in zip(docs, by_id) if not is_dup]
        if repeated_texts is not None and len(repeated_texts) and docs:
            hashes = [records.normalized_text_hash(d.text) for d in docs]
            flags = _suspects(hashes, repeated_texts)
            for doc, hashed, is_dup in zip(docs, hashes, flags):
                if is_dup:
                    yield beam.pvalue.TaggedOutput(DUPLICATE_GROUP_TAG, (hashed, doc))
            docs = [doc for doc, is_dup in zip(docs, flags) if not is_dup]
        if docs:
            beam.metrics.Metrics.counter(NAMESPACE, "documents_parsed").inc(len(docs))
            yield docs


def _smallest_first(docs):
    """A group's documents in the order every runner and re-run agrees on."""
    return sorted(docs, key=lambda d: (d.doc_id, d.text, d.labels))


def _dead_copy(doc, reason: str, detail: str) -> dict:
    beam.metrics.Metrics.counter(NAMESPACE, f"dead_letter_{reason}").inc()
    progress.add(progress.DEAD)
    raw = {"id": doc.doc_id, "text": doc.text, "labels": list(doc.labels)}
    return records.dead_letter("", reason, detail, raw)


def keep_first_of_group(hash_docs):
    """Keeps one document of a duplicate group; the others are dead letters.

    The kept one is the smallest by ``(id, text, labels)``, so every runner
    and every re-run keeps the same document.
    """
    _, docs = hash_docs
    docs = _smallest_first(docs)
    yield docs[0]
    for doc in docs[1:]:
        detail = f"same normalized text as document {docs[0].doc_id!r}"
        yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, _dead_copy(doc, records.DUPLICATE, detail))


class _KeepFirstOfId(beam.DoFn):
    """Keeps one document per repeated id; the others are ``duplicate_id`` dead letters.

    The kept one is the smallest by ``(text, labels)`` (deterministic on any
    runner, whatever the file order). When ``dedupe`` is on, a kept document
    whose text repeats still goes on to the text-duplicate groups.
    """

    def process(self, id_docs, repeated_texts=None):
        doc_id, docs = id_docs
        docs = _smallest_first(docs)
        kept = docs[0]
        for doc in docs[1:]:
            same = "the same text" if doc.text == kept.text else "a different text"
            detail = f"id {doc_id!r} is used by another record (kept), with {same}"
            letter = _dead_copy(doc, records.DUPLICATE_ID, detail)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)
        hashed = records.normalized_text_hash(kept.text)
        if _suspects([hashed], repeated_texts)[0]:
            yield beam.pvalue.TaggedOutput(DUPLICATE_GROUP_TAG, (hashed, kept))
        else:
            yield kept


def _first_pass_keys(record_batch, cfg: DataConfig, limit, ids: bool, texts: bool):
    """``(id hashes, text hashes)`` of a batch, for `FindRepeats`.

    Ids alone need no validation of the rest of the record (the main pass
    does that); over-counting is harmless, since a group of one keeps its
    document.
    """
    id_keys: list[int] = []
    text_keys: list[int] = []
    if texts or cfg.id_field is None:
        docs, _, _ = batches.parse_batch(record_batch, cfg, limit)
        id_keys = [records.id_hash(d.doc_id) for d in docs] if ids else []
        text_keys = [records.normalized_text_hash(d.text) for d in docs] if texts else []
    else:
        for _, raw in record_batch:
            try:
                doc_id = records.record_id(records.row_of(raw), cfg)
            except records.BadRecord:
                continue
            if doc_id is not None:
                id_keys.append(records.id_hash(doc_id))
    yield (np.array(id_keys, np.uint64), np.array(text_keys, np.uint64))


class FindRepeats(beam.PTransform):
    """The id hashes and normalized-text hashes that occur more than once (a first pass).

    Reads the input on its own (a second, independent read) so that the
    main pass can take the results as side inputs without the runner
    having to hold the whole corpus until they are ready. Holds 16 bytes
    per distinct id (and per distinct text with ``dedupe``) while
    combining.

    Returns:
        ``(repeated ids, repeated texts)``: single-element PCollections of
        sorted uint64 arrays, or None for what was not asked.
    """

    def __init__(self, cfg: DataConfig, batch_size: int, limit, ids: bool, texts: bool):
        super().__init__()
        self._cfg = cfg
        self._batch_size = batch_size
        self._limit = limit
        self._ids = ids
        self._texts = texts

    def expand(self, pbegin):
        read = pbegin | "ReadRawRecords" >> ReadRawRecords(
            self._cfg, self._batch_size, counted=False
        )
        keys = read["records"] | "KeysOfBatch" >> beam.FlatMap(
            _first_pass_keys, self._cfg, self._limit, self._ids, self._texts
        )
        ids = texts = None
        if self._ids:
            ids = (
                keys
                | "IdKeys" >> beam.Map(lambda k: k[0])
                | "RepeatedIds" >> beam.CombineGlobally(combiners.DuplicateHashesFn())
            )
        if self._texts:
            texts = (
                keys
                | "TextKeys" >> beam.Map(lambda k: k[1])
                | "DuplicatedHashes" >> beam.CombineGlobally(combiners.DuplicateHashesFn())
            )
        return ids, texts


class ParseDocuments(beam.PTransform):
    """Parses batches of raw records; bad records go to ``dead_letter``.

    With ``repeated_ids`` (from `FindRepeats`), documents whose id occurs
    more than once are grouped by id and one is kept (``duplicate_id``
    dead letters for the others); with ``duplicated`` (``dedupe``),
    documents whose normalized text occurs more than once are grouped by
    hash and one is kept (``duplicate`` dead letters). Only those documents
    are grouped, never the corpus.

    Returns:
        ``docs``: batches of `Document` (the records whose id and text are
        unique, straight from the parse step); ``kept``: batches of the one
        document kept per repeated id or text, or None without grouping;
        ``dead_letter``; ``field_counts`` (`records.observe_rows` per
        batch). ``docs`` and ``kept`` stay apart: a Flatten of the two would
        make the runner hold every parsed document until the groups are
        done (the FnApiRunner did: the corpus in memory).
    """

    def __init__(
        self,
        cfg: DataConfig,
        batch_size: int,
        duplicated=None,
        repeated_ids=None,
        limit: records.TextLimit | None = None,
    ):
        super().__init__()
        self._cfg = cfg
        self._batch_size = batch_size
        self._duplicated = duplicated
        self._repeated_ids = repeated_ids
        self._limit = limit

    def _side(self, pcoll):
        return beam.pvalue.AsSingleton(pcoll) if pcoll is not None else None

    def expand(self, raw_batches):
        ids, texts = self._side(self._repeated_ids), self._side(self._duplicated)
        parsed = raw_batches | "ParseBatch" >> beam.ParDo(
            _ParseBatch(self._cfg, self._limit), repeated_ids=ids, repeated_texts=texts
        ).with_outputs(
            DEAD_LETTER_TAG, FIELD_COUNTS_TAG, ID_GROUP_TAG, DUPLICATE_GROUP_TAG, main="docs"
        )
        docs = [parsed.docs]
        dead = [parsed[DEAD_LETTER_TAG]]
        text_groups = [parsed[DUPLICATE_GROUP_TAG]]
        if ids is not None:
            by_id = (
                parsed[ID_GROUP_TAG]
                | "GroupDuplicateIds" >> beam.GroupByKey()
                | "KeepFirstOfId"
                >> beam.ParDo(_KeepFirstOfId(), repeated_texts=texts).with_outputs(
                    DEAD_LETTER_TAG, DUPLICATE_GROUP_TAG, main="kept"
                )
            )
            docs.append(by_id.kept)
            dead.append(by_id[DEAD_LETTER_TAG])
            text_groups.append(by_id[DUPLICATE_GROUP_TAG])
        if texts is not None:
            by_text = (
                text_groups
                | "AllTextGroups" >> beam.Flatten()
                | "GroupDuplicates" >> beam.GroupByKey()
                | "KeepFirstOfGroup"
                >> beam.ParDo(keep_first_of_group).with_outputs(DEAD_LETTER_TAG, main="kept")
            )
            docs.append(by_text.kept)
            dead.append(by_text[DEAD_LETTER_TAG])
        kept = None
        if len(docs) > 1:
            singles = docs[1] if len(docs) == 2 else tuple(docs[1:]) | "AllKept" >> beam.Flatten()
            kept = singles | "BatchKept" >> beam.BatchElements(
                min_batch_size=1, max_batch_size=self._batch_size
            )
        return Outputs(
            docs=docs[0],
            kept=kept,
            field_counts=parsed[FIELD_COUNTS_TAG],
            **{
                DEAD_LETTER_TAG: dead[0]
                if len(dead) == 1
                else tuple(dead) | "AllParseDeadLetters" >> beam.Flatten()
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
    batches are encoded at once, each by its own `BatchEncoder` (own count
    table, one traced graph for all): Python and TF work overlap on every
    core. Output order does not matter downstream; the batches still in
    flight are emitted when the bundle finishes.
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
            make_batch_encoder(self._steps, bool(p.raw_text_splits), p.vocab_shards, parts)
            for _ in range(threads)
        ]
        self._idle = queue.SimpleQueue()
        for encoder in self._encoders:
            self._idle.put(encoder)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="encode")
        _tune_garbage_collector()

    def _encode(self, docs):
        docs, splits = batches.train_first(docs, self._cfg)
        encoder = self._idle.get()
        try:
            encoded = batches.encode_batch(docs, splits, encoder, self._preprocess.raw_text_splits)
        finally:
            self._idle.put(encoder)
        return batches.without_empty(encoded, [d.text for d in docs])

    @staticmethod
    def _outputs(result, wrap=lambda v: v):
        batch, dead = result
        for letter in dead:
            _count_dead(letter)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, wrap(letter))
        if len(batch):
            yield wrap(batch)

    def start_bundle(self):
        from collections import deque

        self._pending = deque()
        for encoder in self._encoders:
            encoder.drain_counts()  # a retried bundle starts from zero

    def process(self, docs):
        self._pending.append(self._pool.submit(self._encode, docs))
        if len(self._pending) > len(self._encoders):
            yield from self._outputs(self._pending.popleft().result())

    def finish_bundle(self):
        while self._pending:
            yield from self._outputs(self._pending.popleft().result(), _in_global_window)
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
        bundle; ``dead_letter``: documents with no token left after
        cleaning (``empty_after_cleaning``, never written).
    """

    def __init__(self, steps, cfg: DataConfig, preprocess: PreprocessConfig):
        super().__init__()
        self._steps = steps
        self._cfg = cfg
        self._preprocess = preprocess

    def expand(self, doc_batches):
        out = doc_batches | "EncodeBatch" >> beam.ParDo(
            _EncodeBatch(self._steps, self._cfg, self._preprocess)
        ).with_outputs(TOKEN_COUNTS_TAG, DEAD_LETTER_TAG, main="batches")
        return Outputs(
            batches=out.batches,
            token_counts=out[TOKEN_COUNTS_TAG],
            **{DEAD_LETTER_TAG: out[DEAD_LETTER_TAG]},
        )


class WriteExamples(beam.PTransform):
    """Writes gzip TFRecord shards of tf.train.Example, one directory per split.

    Batches (one PCollection, or a tuple written each where it is produced)
    go to the shuffle-free `sinks.WriteTFRecordBatches`; the output is
    ``{split: {"files": n, "examples": n}}``. Every shard's name holds
    ``run_id``, so the trainer can tell shards of this run from any other's.
    """

    def __init__(self, data_dir: str, cfg: PreprocessConfig, run_id: str = ""):
        super().__init__()
        self._data_dir = data_dir
        self._cfg = cfg
        self._run_id = run_id

    def expand(self, encoded):
        parts = encoded if isinstance(encoded, tuple) else (encoded,)
        by_split = tuple(
            part | f"ExamplesBySplit{i or ''}" >> beam.FlatMap(batches.examples_by_split)
            for i, part in enumerate(parts)
        )
        return by_split | "WriteTFRecords" >> sinks.WriteTFRecordBatches(
            self._data_dir,
            schema_splits(),
            self._cfg.num_shards,
            self._cfg.compression_level,
            self._run_id,
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
        if isinstance(token_counts, tuple):  # per-bundle tables of several encoders
            token_counts = token_counts | "AllTokenCounts" >> beam.Flatten()
        return (
            token_counts
            | "MergeCountsPerShard" >> beam.CombinePerKey(combiners.MergeTokenCountsFn())
            | "TopKPerShard"
            >> beam.Map(lambda kv: combiners.top_tokens(kv[1], cfg.vocab_size, cfg.min_count))
            | "TopKGlobal" >> beam.CombineGlobally(combiners.TopTokensFn(cfg.vocab_size))
        )


class ComputeStatistics(beam.PTransform):
    """Documents per split, label counts and token-length histogram.

    Takes one PCollection of batches or a tuple of them (statistics are
    computed where each is produced; only the small dicts are combined).
    """

    def expand(self, encoded):
        parts = encoded if isinstance(encoded, tuple) else (encoded,)
        stats = [
            part | f"BatchStatistics{i or ''}" >> beam.Map(batches.batch_statistics)
            for i, part in enumerate(parts)
        ]
        if len(stats) > 1:  # small dicts, one per batch
            stats = [tuple(stats) | "AllBatchStatistics" >> beam.Flatten()]
        return stats[0] | "MergeStatistics" >> beam.CombineGlobally(combiners.StatisticsFn())
