"""tf.data input pipeline over the Beam job's TFRecords.

Files are interleaved in parallel, examples are shuffled, batched, parsed
and vectorized batch-wise, and the result is prefetched: the corpus is
streamed from disk, never loaded into memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import keras
import tensorflow as tf

from doctags_core import data_files, schema
from doctags_core.atomic_files import atomic_write
from doctags_core.families import input_kind
from trainer.outputs import WORDPIECE_VOCAB_FILE


def make_vectorizer(vocabulary: list[str], sequence_length: int) -> keras.layers.TextVectorization:
    """TextVectorization over already-cleaned text, from the Beam vocabulary.

    Cleaning is not the layer's job (``standardize=None``): the TFRecords hold
    cleaned tokens, and the export runs `doctags_core.cleaning.clean_text`
    before this same layer. Index 0 pads, index 1 is out-of-vocabulary.
    No ``adapt()``: the vocabulary was computed by the Beam combine.
    """
    return keras.layers.TextVectorization(
        standardize=None,
        split="whitespace",
        output_mode="int",
        output_sequence_length=sequence_length,
        vocabulary=vocabulary,
    )


def learn_wordpiece(cfg, save: bool = True) -> list[str]:
    """Learns the WordPiece vocabulary from the Beam word counts.

    Training calls this (every worker learns the same, deterministic pieces;
    only the chief saves them into the model dir); the export then reads the
    saved file, so training and serving use exactly the same pieces.
    """
    from trainer.wordpiece import learn_vocabulary

    word_counts = [(token, n) for token, n, _ in data_files.read_vocab_counts(cfg.data_dir)]
    pieces = learn_vocabulary(word_counts, cfg.model.wordpiece_vocab_size)
    if save:
        tf.io.gfile.makedirs(cfg.model_dir)
        path = os.path.join(cfg.model_dir, WORDPIECE_VOCAB_FILE)
        atomic_write(path, "".join(p + "\n" for p in pieces))
    return pieces


def make_model_vectorizer(cfg, wordpiece_vocabulary=None) -> keras.layers.TextVectorization:
    """The vectorizer the configured model reads: word ids, WordPiece ids or TF-IDF.

    Training and export both call this, so they cannot disagree.

    Args:
        cfg: The experiment `Config` (its data and model directories).
        wordpiece_vocabulary: Pieces from `learn_wordpiece`; by default they
            are read from the model directory.

    Raises:
        FileNotFoundError: for ``wordpiece`` before `learn_wordpiece` saved.
    """
    if cfg.model.tokenizer == "wordpiece":
        from trainer.wordpiece import WordpieceSplitter

        pieces = wordpiece_vocabulary
        if pieces is None:
            path = os.path.join(cfg.model_dir, WORDPIECE_VOCAB_FILE)
            if not tf.io.gfile.exists(path):
                raise FileNotFoundError(f"{path} is missing; training learns it")
            pieces = data_files.read_lines(path)
        splitter = WordpieceSplitter(pieces)
        layer = keras.layers.TextVectorization(
            standardize=None,
            split=splitter,
            output_mode="int",
            output_sequence_length=cfg.model.sequence_length,
            vocabulary=pieces,
        )
        layer.wordpiece_splitter = splitter  # tracked, so its table is saved with the model
        return layer
    vocabulary = data_files.load_vocabulary(cfg.data_dir)
    if input_kind(cfg.model.family) == "tf_idf":
        return keras.layers.TextVectorization(
            standardize=None,
            split="whitespace",
            output_mode="tf_idf",
            vocabulary=vocabulary,
            idf_weights=data_files.load_idf_weights(cfg.data_dir, vocabulary),
        )
    return make_vectorizer(vocabulary, cfg.model.sequence_length)


def make_label_encoder(labels: list[str]) -> keras.layers.StringLookup:
    """Label names -> multi-hot rows; column 0 (unknown labels) is dropped later."""
    return keras.layers.StringLookup(vocabulary=labels, num_oov_indices=1, output_mode="multi_hot")


def encode_labels(labels: tf.RaggedTensor, label_encoder) -> tf.Tensor:
    """Float multi-hot ``[batch, n_labels]`` in output-column order (unknown labels dropped)."""
    return tf.cast(label_encoder(labels)[:, 1:], tf.float32)


def label_batches(file_pattern: str, label_encoder, batch_size: int = 4096) -> tf.data.Dataset:
    """Multi-hot label rows of a split, without tokenizing the text.

    For statistics over a whole split (the normalisation of sample weights):
    only the labels feature is parsed, so a pass costs reading the shards.

    Raises:
        FileNotFoundError: when the pattern matches no shard.
    """
    files = data_files.files_matching(file_pattern)
    spec = {schema.LABELS: schema.feature_spec()[schema.LABELS]}
    ds = tf.data.TFRecordDataset(
        files, compression_type="GZIP", num_parallel_reads=min(len(files), 8)
    ).batch(batch_size)
    return ds.map(
        lambda serialized: encode_labels(
            tf.io.parse_example(serialized, spec)[schema.LABELS], label_encoder
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)


def record_parser(vectorizer, label_encoder, with_metadata: bool = False) -> Callable:
    """``f(serialized [batch])`` -> ``(token_ids, multi_hot[, metadata])``.

    Works on whole batches (one parse and one vectorizer call per batch),
    including empty ones: `trainer.epoch_data` pads a shard's last step with
    an empty batch of records.

    Args:
        vectorizer: From `make_model_vectorizer`.
        label_encoder: From `make_label_encoder`.
        with_metadata: Also return a dict with ``id``, ``text`` and
            ``clean_text`` (for evaluation and skew checks).
    """
    spec = schema.feature_spec(with_text=with_metadata)

    def parse(serialized):
        ex = tf.io.parse_example(serialized, spec)
        # The records hold the cleaned text; the layer splits it on whitespace
        # exactly as it does behind the in-graph cleaning at serving time, so
        # training ids come from the serving code path.
        ids = vectorizer(ex[schema.CLEAN_TEXT])
        y = encode_labels(ex[schema.LABELS], label_encoder)
        if with_metadata:
            meta = {
                "id": ex[schema.ID],
                "text": ex[schema.TEXT],
                "clean_text": ex[schema.CLEAN_TEXT],
            }
            return ids, y, meta
        return ids, y

    return parse


def count_records(files: list[str]) -> list[int]:
    """Records in each gzip TFRecord file, in ``files`` order.

    Splitting an epoch by records between workers needs every file's count;
    the Beam job's metadata has only per-split totals. One pass reads the
    framing and decompresses, parses nothing; files are counted in parallel.
    """
    if not files:
        return []

    def count(path):
        batches = tf.data.TFRecordDataset(path, compression_type="GZIP").batch(8192)
        return batches.reduce(tf.constant(0, tf.int64), lambda n, b: n + tf.size(b, tf.int64))

    counts = tf.data.Dataset.from_tensor_slices(files).map(
        count, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return [int(n) for n in counts.as_numpy_iterator()]


def make_dataset(
    file_pattern: str,
    vectorizer,
    label_encoder,
    batch_size: int,
    shuffle: bool = False,
    shuffle_buffer: int = 10000,
    seed: int | None = None,
    with_metadata: bool = False,
) -> tf.data.Dataset:
    """Batches of ``(token_ids, multi_hot_labels)`` from TFRecord shards.

    Args:
        file_pattern: Glob of gzip TFRecord shards.
        vectorizer: From `make_vectorizer`.
        label_encoder: From `make_label_encoder`.
        batch_size: Examples per batch (the GLOBAL batch under a strategy).
        shuffle: Shuffle files and examples (training only).
        shuffle_buffer: Examples held for shuffling.
        seed: Shuffle seed, for reproducible runs.
        with_metadata: Also yield a dict with ``id``, ``text`` and ``clean_text``
            (for evaluation and skew checks) as a third element.

    Raises:
        FileNotFoundError: when the pattern matches no shard.
    """
    files = data_files.files_matching(file_pattern)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not shuffle,
    )
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    parse = record_parser(vectorizer, label_encoder, with_metadata)
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
