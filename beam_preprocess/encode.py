"""One traced TF graph per batch: clean, tokenize, serialize, pre-count.

Per-document and per-token Python loops are what made the job slow (about
600 documents/s): protobuf objects built one by one, ``Counter`` updates per
token. Here a whole batch crosses into TensorFlow once and comes back as

* the number of tokens per document (row splits),
* one serialized ``tf.train.Example`` per document (the cleaned text as
  one string, see `schema.CLEAN_TEXT`), built with core string ops from the
  protobuf wire format (no per-document Python, no
  ``tf.io.serialize_tensor``), parse-equivalent to `schema.make_example`,

and its train-split token counts and document frequencies
(``unique_with_counts``) are added to a TF hash table that the DoFn drains
once per bundle, so the keyed combine downstream merges a handful of
tables instead of one per batch.

Cleaning is `doctags_core.cleaning.clean_text`, the very function the
exported model runs; only the UTF-8 repair pass is skipped, because the
parser has already dead-lettered every record that is not valid UTF-8.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from doctags_core import schema

# Protobuf wire-format tags (field number << 3 | wire type 2, length-delimited).
_TAG1 = b"\x0a"  # field 1: Example.features, Features.feature, Feature.bytes_list,
#                  BytesList.value, FeatureEntry.key
_TAG2 = b"\x12"  # field 2: FeatureEntry.value
_VARINT_BYTES = 5  # lengths below 2**35 bytes


@dataclass
class EncodedBatch:
    """What the TF graph returns for one batch, as numpy arrays."""

    token_splits: np.ndarray  # int64 [n + 1]: document i has s[i+1] - s[i] tokens
    examples: np.ndarray  # object array of serialized tf.train.Example bytes


@dataclass
class TokenCounts:
    """Train-split token counts accumulated over the batches of a bundle."""

    tokens: np.ndarray  # object array of distinct tokens (bytes)
    counts: np.ndarray  # int64 occurrences in train documents
    doc_counts: np.ndarray  # int64 train documents containing the token
    shards: np.ndarray  # int64 combine shard of each token


def _varint(tf, table, n):
    """Protobuf varint of non-negative int64 lengths, as byte strings."""
    parts = []
    for k in range(_VARINT_BYTES):
        byte = tf.bitwise.bitwise_and(tf.bitwise.right_shift(n, 7 * k), 0x7F)
        more = n >= (1 << (7 * (k + 1)))
        code = tf.where(more, byte + 0x80, byte)
        piece = tf.gather(table, code)
        parts.append(piece if k == 0 else tf.where(n >= (1 << (7 * k)), piece, ""))
    return tf.strings.join(parts)


def _field(tf, table, tag: bytes, payload):
    """``tag + varint(len(payload)) + payload``, elementwise."""
    size = tf.cast(tf.strings.length(payload), tf.int64)
    return tf.strings.join([tag, _varint(tf, table, size), payload])


def _short_field(tf, table, short, tag: bytes, payload):
    """`_field` with a one-gather fast path when every payload is < 128 bytes.

    Tokens almost always are; a batch holding a longer one takes the
    general path (a ``tf.cond``, so only one branch runs).
    """
    size = tf.cast(tf.strings.length(payload), tf.int64)
    return tf.cond(
        tf.reduce_max(tf.concat([size, [0]], 0)) < 128,
        lambda: tf.strings.join([tf.gather(short, size), payload]),
        lambda: tf.strings.join([tag, _varint(tf, table, size), payload]),
    )


def _bytes_feature(tf, table, values, row_splits, short=None):
    """Serialized ``Feature{bytes_list{value: ...}}`` per row of a ragged list."""
    if short is None:
        pieces = _field(tf, table, _TAG1, values)
    else:
        pieces = _short_field(tf, table, short, _TAG1, values)
    ragged = tf.RaggedTensor.from_row_splits(pieces, row_splits, validate=False)
    bytes_list = tf.strings.reduce_join(ragged, axis=1)
    return _field(tf, table, _TAG1, bytes_list)


def _row_of_each_value(tf, row_splits):
    """The row index of every value of a ragged tensor, in memory per value.

    ``tf.repeat(tf.range(n), row_lengths)`` (and ``RaggedTensor.value_rowids``,
    built on it) pads every row to the longest one first: ``n x longest``
    values (issue 12: a 19.0 GB peak for 400 documents beside one of 50 MB).
    A binary search of each value's position in the row splits needs one
    int64 per value, whatever the rows' lengths.
    """
    positions = tf.range(row_splits[-1], dtype=row_splits.dtype)
    return tf.searchsorted(row_splits, positions, side="right", out_type=row_splits.dtype) - 1


def _rows_of_prefix(tf, row_splits, rows):
    """The row index of every value of the first ``rows`` rows, in one pass.

    A count of the row starts at each value position, summed up: linear in
    the values (`_row_of_each_value` searches the splits for each value).
    Row starts equal to the prefix's end (empty rows at its end) fall
    outside the count and own no value.
    """
    end = row_splits[rows]
    starts = tf.math.bincount(row_splits[1:rows], minlength=end, maxlength=end, dtype=tf.int64)
    return tf.cumsum(starts)


def _train_tokens(tf, values, row_splits, is_train):
    """``(train documents' tokens, their document index)`` of a tokenized part.

    When the training documents come first (`batches.train_first` orders
    every batch so), they are a prefix: their tokens are a slice of the
    values and need neither a search of each token's row nor a masked copy
    of the strings: 90.8 -> 87.8 us per synthetic document for the whole
    encoder (best of 4 alternating runs of 60 batches, on a machine busy
    with another job). Any other order takes the general path; both give
    the same tokens in the same order.
    """
    n_train = tf.reduce_sum(tf.cast(is_train, tf.int64))

    def prefix():
        return values[: row_splits[n_train]], _rows_of_prefix(tf, row_splits, n_train)

    def general():
        doc_of_token = _row_of_each_value(tf, row_splits)
        train_token = tf.gather(is_train, doc_of_token)
        return tf.boolean_mask(values, train_token), tf.boolean_mask(doc_of_token, train_token)

    return tf.cond(tf.reduce_all(is_train[:n_train]), prefix, general)


def _document_counts(tf, docs, index, size, rows):
    """How many documents hold each distinct token: distinct ``(document, token)`` pairs.

    Each pair is one int64 key; while they fit in 31 bits (a batch of
    ``rows`` documents, ``size`` distinct tokens: ~30M keys at 1,024 by
    30,000) the distinct keys are found as int32, whose hash set is half
    the memory: 16.3 -> 14.3 us per synthetic document for the counting
    ops (best of 5, alternating, 1,024-document batches).
    """
    keys = docs * (size + 1) + index
    pairs = tf.cond(
        rows * (size + 1) < 2**31,
        lambda: tf.cast(tf.unique(tf.cast(keys, tf.int32))[0], tf.int64),
        lambda: tf.unique(keys)[0],
    )
    return tf.math.bincount(pairs % (size + 1), minlength=size, maxlength=size, dtype=tf.int64)


def _key_field(key: str) -> bytes:
    """The serialized ``FeatureEntry.key`` field of a feature name (under 128 bytes)."""
    return _TAG1 + bytes([len(key)]) + key.encode("utf-8")


def _map_entry(tf, table, key: str, feature):
    """One serialized ``Features.feature`` map entry (``key -> feature``)."""
    entry = tf.strings.join([_key_field(key), _field(tf, table, _TAG2, feature)])
    return _field(tf, table, _TAG1, entry)


def _varint_size(tf, n):
    """Bytes of the protobuf varint of each non-negative int64 length (`_VARINT_BYTES` at most)."""
    size = tf.ones_like(n)
    for k in range(1, _VARINT_BYTES):
        size += tf.cast(n >= (1 << (7 * k)), tf.int64)
    return size


def _one_value_entry(tf, key: str, payload_size):
    """The framing of a one-value bytes feature entry, as pieces around its payload.

    A ``Features.feature`` map entry holding ``key -> Feature{bytes_list
    {value: payload}}`` is four nested length-delimited fields, and each
    prefix is a tag and a varint length that follow from the payload's
    size alone. Returns ``(sizes, layout, entry_size)``: the lengths whose
    varints the prefix needs, outermost first; the prefix as tags, the
    key field and ``None`` where those varints go; and the whole entry's
    size in bytes.
    """
    key_field = _key_field(key)
    value = 1 + _varint_size(tf, payload_size) + payload_size  # BytesList.value
    feature = 1 + _varint_size(tf, value) + value  # Feature.bytes_list
    entry = len(key_field) + 1 + _varint_size(tf, feature) + feature  # key + value
    total = 1 + _varint_size(tf, entry) + entry  # Features.feature
    layout = [_TAG1, None, key_field + _TAG2, None, _TAG1, None, _TAG1, None]
    return [entry, feature, value, payload_size], layout, total


def _serialize_examples(tf, table, short, singles, labels):
    """Serialized ``tf.train.Example`` per document, each written in one string join.

    Nesting one length-delimited field in another with a join per level
    copies the big payloads (the cleaned and the raw text) once per level,
    five times in all; here every prefix is computed from the payload
    sizes and each text is copied once, into its Example.

    Args:
        tf: The TensorFlow module.
        table: The 256 one-byte strings (`_varint`).
        short: Tag and length prefixes of payloads under 128 bytes (`_short_field`).
        singles: ``[(key, payload)]`` of the one-value bytes features
            (``[n]`` string tensors), in output order.
        labels: ``(values, row_splits)`` of the label feature (small
            strings, written with a join per level), which goes after the
            first two singles, as in `schema.make_example`'s field order.
    """
    framings = [
        _one_value_entry(tf, key, tf.cast(tf.strings.length(v), tf.int64)) for key, v in singles
    ]
    label_entry = _map_entry(tf, table, schema.LABELS, _bytes_feature(tf, table, *labels, short))
    features_size = tf.add_n(
        [total for _, _, total in framings] + [tf.cast(tf.strings.length(label_entry), tf.int64)]
    )
    # All the varints of the batch in one vectorised pass.
    sizes = [features_size] + [size for group, _, _ in framings for size in group]
    n = tf.shape(features_size)[0]
    varints = tf.reshape(_varint(tf, table, tf.concat(sizes, 0)), [len(sizes), n])
    pieces, row = [_TAG1, varints[0]], 1
    for i, ((_, payload), (_, layout, _)) in enumerate(zip(singles, framings)):
        if i == 2:
            pieces.append(label_entry)
        for part in layout:
            if part is None:
                pieces.append(varints[row])
                row += 1
            else:
                pieces.append(part)
        pieces.append(payload)
    if len(singles) <= 2:
        pieces.append(label_entry)
    return tf.strings.join(pieces)


@functools.cache
def _encode_function(steps: tuple[str, ...], keep_raw_text: bool, parts: int):
    """The traced per-batch graph of `BatchEncoder`, one per process and settings.

    Every encoder of a worker (one per ``preprocess.encode_threads``) calls
    the same function: the count table is an input, not a capture, so
    nothing in the graph belongs to one encoder. Tracing and optimizing the
    graph costs ~0.8 CPU-s, paid once per process instead of once per
    encoder; TensorFlow runs a traced function from several threads at once.
    """
    from doctags_core.cleaning import clean_text, tokenize
    from doctags_core.tf_runtime import import_tensorflow

    tf = import_tensorflow()
    table = tf.constant([bytes([i]) for i in range(256)])
    short = tf.constant([_TAG1 + bytes([i]) for i in range(128)])
    no_counts = tf.zeros([2], tf.int64)

    # autograph=False: the graph is plain TF ops (Python loops only unroll
    # the fixed cleaning steps), and skipping the source rewrite saves
    # seconds of start-up on every worker.
    @tf.function(
        autograph=False,
        input_signature=[
            tf.TensorSpec([None], tf.string),
            tf.TensorSpec([None], tf.string),
            tf.TensorSpec([None], tf.string),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None], tf.bool),
            tf.TensorSpec([None], tf.bool),
            tf.TensorSpec([], tf.resource),
        ],
    )
    def encode(ids, texts, label_values, label_splits, is_train, keep_text, totals):
        # Independent parts of the batch: TF's inter-op pool runs their
        # ops concurrently (the string kernels are single-threaded).
        n = tf.shape(ids, out_type=tf.int64)[0]
        cuts = [n * i // parts for i in range(parts + 1)]
        outs = []
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            l_lo, l_hi = label_splits[lo], label_splits[hi]
            outs.append(
                encode_part(
                    ids[lo:hi],
                    texts[lo:hi],
                    label_values[l_lo:l_hi],
                    label_splits[lo : hi + 1] - l_lo,
                    is_train[lo:hi],
                    keep_text[lo:hi],
                )
            )
        splits = [outs[0][0]]
        for out in outs[1:]:
            splits.append(out[0][1:] + splits[-1][-1])
        examples = tf.concat([out[1] for out in outs], 0)

        # In program order (automatic control dependencies on the table):
        # cheaper than merging the parts' distinct tokens first.
        for _, _, distinct, occurrences, documents in outs:
            added = tf.stack([occurrences, documents], axis=1)
            before = tf.raw_ops.LookupTableFindV2(
                table_handle=totals, keys=distinct, default_value=no_counts
            )
            tf.raw_ops.LookupTableInsertV2(
                table_handle=totals, keys=distinct, values=before + added
            )
        return tf.concat(splits, 0), examples

    def encode_part(ids, texts, label_values, label_splits, is_train, keep_text):
        n = tf.shape(ids, out_type=tf.int64)[0]
        cleaned = clean_text(texts, steps, assume_valid_utf8=True)
        tokens = tokenize(cleaned)  # the trainer's TextVectorization splits the same way
        values, splits = tokens.values, tokens.row_splits
        singles = [(schema.ID, ids), (schema.CLEAN_TEXT, cleaned)]
        if keep_raw_text:
            singles.append((schema.TEXT, tf.where(keep_text, texts, "")))
        examples = _serialize_examples(tf, table, short, singles, (label_values, label_splits))

        # Train-split counts: distinct tokens, occurrences, documents.
        train_values, train_docs = _train_tokens(tf, values, splits, is_train)
        distinct, index, occurrences = tf.unique_with_counts(train_values, out_idx=tf.int64)
        size = tf.shape(distinct, out_type=tf.int64)[0]
        documents = _document_counts(tf, train_docs, index, size, n)
        return splits, examples, distinct, occurrences, documents

    return encode


class BatchEncoder:
    """The per-batch graph (`_encode_function`, shared) plus this encoder's token-count table.

    Calling it encodes a batch and adds the batch's train-token counts to a
    TF hash table of ``[occurrences, documents]`` (a vectorised lookup and
    insert of each part's distinct tokens); `drain_counts` returns the
    counts and starts a new table. The Beam DoFn drains at the end of each
    bundle, so Python merges one table per bundle instead of one per batch,
    and memory stays bounded by the vocabulary.

    The table is a ``DenseHashTable`` (open addressing, values stored in
    place): its lookup and insert cost ~6-12 us per document where the
    ``MutableHashTable`` (a node per key, a vector per value) cost ~25-30
    (40 batches of 512 synthetic documents, same process). Its removals
    leave tombstones that it never reclaims (a table drained by ``remove``
    failed its lookups after 12 drains), so each drain starts a fresh
    table instead, and the traced graph takes the table's handle as an
    input rather than capturing one table for life. Tokens come from
    ``tf.strings.split`` on whitespace, so they are never the empty string
    or a space, the two keys the table reserves.

    Args:
        steps: Cleaning steps (``cfg.cleaning.steps``).
        keep_raw_text: Give each Example a raw-text feature, holding the
            raw text where the call's ``keep_text`` is true and an empty
            string elsewhere (`schema.feature_spec`'s default for a record
            without it); False leaves the feature out.
        vocab_shards: Key space of the token-count combine.
        parts: Independent slices of each batch inside the graph, so that
            TensorFlow runs them on that many cores at once.
    """

    def __init__(self, steps, keep_raw_text: bool, vocab_shards: int, parts: int = 2):
        from doctags_core.tf_runtime import import_tensorflow

        self._tf = import_tensorflow()
        self._vocab_shards = vocab_shards
        self._table = self._new_table()
        self._encode = _encode_function(tuple(steps), bool(keep_raw_text), max(1, parts))

    def __call__(
        self, ids, texts, label_values, label_splits, is_train, keep_text=None
    ) -> EncodedBatch:
        """Encodes a batch; ``keep_text`` (default: all) says whose raw text is kept."""
        tf = self._tf
        if keep_text is None:
            keep_text = np.ones(len(ids), dtype=bool)
        splits, examples = self._encode(
            tf.constant(ids, tf.string),
            tf.constant(texts, tf.string),
            tf.constant(label_values, tf.string),
            tf.constant(label_splits, tf.int64),
            tf.constant(is_train, tf.bool),
            tf.constant(keep_text, tf.bool),
            self._table.resource_handle,
        )
        return EncodedBatch(splits.numpy(), examples.numpy())

    def _new_table(self):
        """An empty token -> ``[occurrences, documents]`` table."""
        tf = self._tf
        return tf.lookup.experimental.DenseHashTable(
            tf.string,
            tf.int64,
            default_value=[0, 0],
            empty_key="",
            deleted_key=" ",
            initial_num_buckets=1 << 14,
        )

    def drain_counts(self) -> TokenCounts:
        """The counts accumulated since the last drain; the next batch starts a new table."""
        tf = self._tf
        keys, both = self._table.export()  # every bucket, the empty ones too
        self._table = self._new_table()
        keys = tf.reshape(keys, [-1])
        used = tf.not_equal(keys, "")
        tokens, both = tf.boolean_mask(keys, used), tf.boolean_mask(both, used)
        shards = tf.strings.to_hash_bucket_fast(tokens, self._vocab_shards)
        return TokenCounts(tokens.numpy(), both[:, 0].numpy(), both[:, 1].numpy(), shards.numpy())


def make_batch_encoder(
    steps, keep_raw_text: bool, vocab_shards: int, parts: int = 2
) -> BatchEncoder:
    """A `BatchEncoder` (kept as a function for symmetry with the cleaner)."""
    return BatchEncoder(steps, keep_raw_text, vocab_shards, parts)
