"""The one experiment config: a frozen dataclass tree loaded from YAML.

Every stage (Beam preprocessing, training, export, serving, evaluation) reads
the same `Config`. Validation happens here, before any work starts, so that a
typo in a key or a bad value fails in milliseconds with a message naming the
key instead of an hour into a Dataflow job.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from doctags_core.candidates import CANDIDATES, DEFAULT_CANDIDATES
from doctags_core.cleaning import CLEANING_STEPS, DEFAULT_STEPS
from doctags_core.families import FAMILIES
from doctags_core.splits import SPLITS


class ConfigError(ValueError):
    """A config that cannot be used; the message names the offending key."""


@dataclass(frozen=True)
class DataConfig:
    """Where the raw documents are and how to read their fields.

    Attributes:
        input_pattern: Glob(s) of input files, relative to the config file's
            directory unless absolute. Several globs may be given as a list.
        format: ``jsonl``, ``csv``, ``parquet`` or ``tfrecord`` (of
            ``tf.train.Example`` with the fields below as bytes features);
            ``auto`` picks by file extension (``.jsonl``, ``.ndjson``,
            ``.json``, ``.csv``, ``.parquet``, ``.pq``, ``.tfrecord``,
            ``.tfrecords``, each optionally ``.gz``).
        id_field: Field holding a unique document id; a document's split is a
            hash of its id, so every run and runner splits alike. ``null``
            makes the id a SHA-1 of the text (identical texts then share an
            id, hence a split). A record without the field is a dead letter.
        text_fields: Fields joined (with a newline) into the document text,
            e.g. ``[title, body]``; a missing or empty field is skipped.
        label_field: Field holding the labels: a list (JSON, Parquet), a
            string holding a JSON list (``'["a", "b"]'``), or a string split
            on ``label_delimiter`` (``"murder, violence ,flashback"``: blanks
            around names stripped, duplicates dropped).
        label_delimiter: What separates label names in a string label field
            (``","``, ``"|"``, ``";"`` ...); unused for lists.
        split_field: Optional field naming each record's split:
            ``train``/``training``, ``validation``/``valid``/``val``/``dev``,
            ``test``/``testing`` (any case). Test and validation rows keep
            their split; train rows lose ``validation_fraction`` of
            themselves to validation; other values are dead letters
            (``invalid_split``); records without a value are split by id.
            ``null``: no split field, the id hash decides all three.
        validation_fraction: Share of train documents (by id hash) moved to
            validation; 0 keeps train whole when the data has its own
            validation rows.
        test_fraction: Share of documents (by id hash) used as test when the
            data has no split field (ignored with one).
        allow_unlabeled: Keep documents whose label list is empty (as
            all-negative examples, "no tag applies") instead of
            dead-lettering them with reason ``missing_labels``.
        numeric_labels: Accept integer label values (a JSON ``[1, 2]``, a
            Parquet or TFRecord int64 list) as the label names ``"1"`` and
            ``"2"``. Off by default: numbers where names are expected are
            usually a wrong ``label_field`` (a count, a class index of
            another scheme), so such records are ``invalid_labels`` dead
            letters. Floats and booleans are never labels.
    """

    input_pattern: tuple[str, ...] = ()
    format: str = "auto"
    id_field: str | None = "id"
    text_fields: tuple[str, ...] = ("text",)
    label_field: str = "labels"
    label_delimiter: str = ","
    split_field: str | None = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    allow_unlabeled: bool = False
    numeric_labels: bool = False


@dataclass(frozen=True)
class CleaningConfig:
    """Ordered text-cleaning steps (see `doctags_core.cleaning`).

    Attributes:
        steps: Steps applied in this order by the Beam job and, identically,
            inside the exported model: ``remove_urls``, ``strip_html`` (tags
            removed, then entities decoded), ``lowercase``,
            ``expand_contractions``, ``drop_tokens_with_digits``,
            ``letters_only``, ``remove_stopwords`` (English). Invalid UTF-8 is
            replaced and whitespace folded in every case. Export refuses a
            config whose steps differ from the data's.
    """

    steps: tuple[str, ...] = DEFAULT_STEPS


@dataclass(frozen=True)
class PreprocessConfig:
    """Beam job settings.

    Attributes:
        runner: Beam runner name; DirectRunner is always named explicitly
            because newer Beam would otherwise try Prism, which downloads a
            binary.
        direct_running_mode: ``in_memory``, ``multi_threading`` or
            ``multi_processing`` for the DirectRunner.
        direct_num_workers: Worker count for the DirectRunner modes.
        batch_size: Documents per element once batched; all TF work runs on
            whole batches so per-element overhead is paid once per batch.
            The encoder alone took 72.5 us per synthetic document at 512,
            66.4 at 1,024 (fewer count-table updates per document), 65.9
            at 2,048 and 83.1 at 4,096 (the per-batch hash sets outgrow
            the caches). Memory per batch in flight is about this many
            times ``max_chars``, at worst.
        vocab_size: Keep at most this many tokens (most frequent first).
        min_count: Drop tokens seen fewer times in the train split.
        vocab_shards: Key space for the distributed token count combine.
        num_shards: TFRecord files per split written by each writer bundle
            (round-robin over batches). The DirectRunner runs one bundle per
            worker, so this is the shard count there; runners with many
            bundles write more, smaller files. Fixed global counts would
            need a shuffle of every record (0 means 1).
        raw_text_splits: The splits whose records also keep their raw
            text, which end-to-end evaluation of the exported model
            (``doctags evaluate``, skew checks) reads. Training reads only
            the cleaned text, and the raw corpus is still where it was, so
            by default the train split does not keep a second copy of it:
            that copy was half of the bytes the job compressed and wrote.
            ``[train, validation, test]`` keeps it everywhere (``doctags
            evaluate --split train``, bench/quality.py's baselines), ``[]``
            nowhere. Replaces ``keep_raw_text`` (true: every split; false:
            none), which older configs may still hold.
        compression_level: gzip level of the TFRecords, 1 (fastest) to 9
            (smallest); 1-3 are ISA-L's levels (several times faster than
            zlib), 4-9 zlib's. Level 1 writes ~4x faster than zlib's default
            6, for files about 8% larger.
        dedupe: Drop exact duplicates (same text up to case and whitespace),
            keeping the document with the smallest id; the others are
            dead letters with reason ``duplicate``. Reads the input twice.
        encode_threads: Batches each worker encodes at once, each on its own
            thread with its own TF graph, while the worker's main thread
            reads, parses and writes. With 1, each batch's graph is split in
            two parts instead. 2 is the measured best on 2 cores (about 15%
            faster than 1 thread with two parts); about the cores a worker
            has, divided by the worker harness threads on a cluster.
        max_chars: Longest document text kept, in characters (of the
            joined ``text_fields``, before cleaning). 100,000 characters
            are about 15,000 words: 50 times what the sequence models read
            (``model.sequence_length``), longer than nearly every article,
            abstract or synopsis, and a bounded cost per document (a few MB
            in the encoder at most), so one huge record cannot blow up a
            worker. Raise it for book-length documents and bag-of-words
            models.
        oversize: What happens to a document longer than ``max_chars``:
            ``truncate`` keeps its first ``max_chars`` characters (counted
            in ``metadata.json`` as ``truncated_documents``);
            ``dead_letter`` sends it to the dead letters with reason
            ``too_long``.
        max_record_bytes: Longest raw record a reader holds, in bytes: a
            JSONL line or a CSV line. A longer one is skipped as it
            streams past (never held whole) and becomes a
            ``record_too_large`` dead letter. 64 MiB leaves room for a
            record whose text is then truncated to ``max_chars``, and stops
            a file that is one giant line (a JSON array saved as
            ``.jsonl``) from being read into memory. Parquet and TFRecord
            records are read whole by their libraries.
        max_dead_letter_fraction: The job fails (exit status 3, the
            previous dataset left in place) when more than this share of
            the records read are dead letters, not counting ``duplicate``
            (removed on purpose by ``dedupe``). 0.1: a few percent of
            broken lines is common in scraped corpora, while a wrong field
            name, delimiter or format dead-letters most records.
        duplicate_ids: ``dead_letter``: when several records share an id,
            the one with the smallest ``(text, labels)`` is kept and the
            others are dead letters with reason ``duplicate_id`` (an id
            names one document; two texts under one id would also land in
            the same split by construction). Finding them reads the input
            a second time (ids only, 16 bytes per document in memory), as
            ``dedupe`` does; ``keep`` skips that pass and keeps them all.
    """

    runner: str = "DirectRunner"
    direct_running_mode: str = "in_memory"
    direct_num_workers: int = 1
    batch_size: int = 1024
    vocab_size: int = 20000
    min_count: int = 2
    vocab_shards: int = 16
    num_shards: int = 2
    raw_text_splits: tuple[str, ...] = ("validation", "test")
    compression_level: int = 1
    dedupe: bool = False
    encode_threads: int = 2
    max_chars: int = 100_000
    oversize: str = "truncate"
    max_record_bytes: int = 64 << 20
    max_dead_letter_fraction: float = 0.1
    duplicate_ids: str = "dead_letter"


@dataclass(frozen=True)
class ModelConfig:
    """Network shape and tokenization.

    Attributes:
        family: ``auto`` (train the ``selection.candidates`` and keep what
            does best on the validation split, see `SelectionConfig`), or one
            family: ``dnn`` (the seed recipe), ``cnn`` (Kim), ``bigru`` (with
            attention pooling), ``transformer`` (small encoder) or
            ``tfidf_mlp`` (bag of words, IDF from the Beam document counts).
        sequence_length: Token ids per document (sequence families): the
            most a model reads; longer documents are cut, shorter ones
            padded.
        fit_sequence_length: Cut ``sequence_length`` to the train split's
            99th-percentile document length (in words after cleaning,
            rounded up to a multiple of 8) when that is shorter. Padding
            costs as much compute as words: on ~40-word texts a 256-long
            cnn spends most of each epoch on it, and stops at
            ``training.budget_minutes`` before it has converged. Training
            and export read the length from the Beam job's
            ``metadata.json``, so they agree; the config saved beside the
            model holds the fitted number. Not applied with the
            ``wordpiece`` tokenizer (pieces outnumber words).
        embedding_dim: Embedding width (also the Transformer's model width).
        hidden_units: Dense layer width (dnn, cnn, tfidf_mlp).
        dropout: Dropout rate.
        conv_filters: Filters per kernel width (cnn).
        kernel_sizes: Convolution widths (cnn).
        rnn_units: GRU units per direction (bigru).
        transformer_layers: Encoder blocks (transformer).
        transformer_heads: Attention heads (transformer).
        transformer_ff_dim: Feed-forward width (transformer).
        tokenizer: ``word``, or ``wordpiece`` (subwords learned from the Beam
            word counts by tensorflow-text, split inside the exported graph).
        wordpiece_vocab_size: Target WordPiece vocabulary size.
    """

    family: str = "auto"
    sequence_length: int = 300
    fit_sequence_length: bool = True
    embedding_dim: int = 128
    hidden_units: int = 256
    dropout: float = 0.3
    conv_filters: int = 128
    kernel_sizes: tuple[int, ...] = (3, 4, 5)
    rnn_units: int = 64
    transformer_layers: int = 2
    transformer_heads: int = 4
    transformer_ff_dim: int = 256
    tokenizer: str = "word"
    wordpiece_vocab_size: int = 8000


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation and distribution settings.

    Attributes:
        batch_size: GLOBAL batch size, split across replicas.
        epochs: Maximum epochs; early stopping may end sooner.
        train_splits: The splits the model learns from: ``[train]``. The
            refit of an auto run's winner (``selection.refit``) learns from
            ``[train, validation]``, with ``early_stopping`` off.
        learning_rate: Adam learning rate for the global batch.
        early_stopping_patience: Epochs without improvement of ``monitor``.
        early_stopping: False trains all ``epochs`` and keeps the last
            weights: for a model that learns from the validation split too,
            which then cannot tell when to stop.
        monitor: Validation metric for early stopping and best checkpoint.
        devices: Devices for MirroredStrategy; empty means all GPUs, or the
            CPU when there is none.
        logical_cpu_devices: Split the CPU into this many logical devices
            (0 = leave as is); how multi-device code is tested without GPUs.
        shuffle_buffer: Examples held by the shuffle buffer.
        seed: Seed for weights and shuffling.
        per_replica_batch_size: 0 uses ``batch_size`` as the global batch;
            N > 0 makes the global batch N x replicas (all replicas of all
            workers), and ``batch_size`` is then only the reference batch
            for ``learning_rate_scaling``.
        learning_rate_scaling: ``none`` uses ``learning_rate`` as given;
            ``linear`` multiplies it by global batch / ``batch_size`` (the
            linear scaling rule, Goyal et al. 2017), which only changes
            anything when ``per_replica_batch_size`` sets the global batch.
        checkpoint_every_steps: Save the resumable training state (weights,
            optimizer, epoch, step, data position) every N steps, and at
            every epoch end; 0 saves at epoch ends only.
        mixed_precision: ``float32``, or ``mixed_float16`` (float16 compute,
            float32 weights and output layer, dynamic loss scaling).
        jit_compile: XLA-compile the per-replica train and eval steps.
        budget_minutes: Wall-clock minutes ``model.family: auto`` may spend
            training its candidates. After each epoch a candidate stops
            (keeping its best weights) when another epoch as long would end
            past the budget, and the candidates after it are skipped; each
            candidate that starts trains at least one epoch. Preprocessing,
            the refit of the winner (``selection.refit``), export and
            evaluation are not counted. On a corpus of ~20k short
            documents with hundreds of labels on 2 cores (Debian
            debtags), the default lets both candidates finish: the
            tfidf_mlp in ~5 minutes, the cnn in ~14 (10 epochs, stopped
            early), with ``model.fit_sequence_length`` and the fused Adam
            update (`trainer.fused_adam`). Before those two it stopped
            the cnn after 5 epochs while it was still improving, and at
            10 minutes the cnn got 3 epochs and auto lost 0.016 micro-F1
            to LinearSVC. The bundled Reuters run trains both to the end
            well within the 20 minutes.
        steps_per_call: Training steps run by one call of the compiled step
            function (as Keras' ``steps_per_execution``): fewer host round
            trips per step, which is what bounds small models and
            accelerators. A call never crosses a checkpoint
            (``checkpoint_every_steps``) or an epoch end, so checkpoints and
            resumed steps are the same for any value; metrics are summed on
            each replica and all-reduced once per call.
        input_shards: Parts the epoch's training records are cut into (the
            files in a (seed, epoch) order, split into equal record ranges);
            each worker reads only its shards, and each shard gives
            ``global batch / input_shards`` examples to every step (see
            `trainer.sharding`). 0 means one per worker. Runs with the same
            value (and global batch) see the same examples at every step,
            on any number of devices or workers that divides it.
    """

    batch_size: int = 64
    epochs: int = 15
    train_splits: tuple[str, ...] = ("train",)
    learning_rate: float = 0.001
    early_stopping_patience: int = 3
    early_stopping: bool = True
    monitor: str = "val_pr_auc"
    devices: tuple[str, ...] = ()
    logical_cpu_devices: int = 0
    shuffle_buffer: int = 10000
    seed: int = 42
    per_replica_batch_size: int = 0
    learning_rate_scaling: str = "none"
    checkpoint_every_steps: int = 200
    mixed_precision: str = "float32"
    jit_compile: bool = False
    budget_minutes: float = 20.0
    steps_per_call: int = 16
    input_shards: int = 0


@dataclass(frozen=True)
class LossConfig:
    """Training loss (see `trainer.losses`).

    Attributes:
        name: ``bce``, ``weighted_bce`` or ``focal``.
        pos_weight_power: ``weighted_bce`` weight is ``((N - n) / n) ** power``;
            0.5 (square root) tempers the weight of very rare labels.
        pos_weight_cap: Upper bound on a label's positive weight.
        focal_gamma: Focusing parameter of the focal loss.
        focal_alpha: Class-balance weight of the focal loss (None: off).
        sample_weights: ``none``, or ``balanced``: each training example's
            loss is weighted by the mean over its labels of scikit-learn's
            "balanced" class weight, normalised to mean 1 over the train
            split (see `trainer.losses.BalancedSampleWeights`). Training
            only: validation, early stopping and the export are unweighted.
        sample_weight_cap: Upper bound on an example's (normalised) weight;
            None: no bound.
    """

    name: str = "bce"
    pos_weight_power: float = 0.5
    pos_weight_cap: float = 30.0
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    sample_weights: str = "none"
    sample_weight_cap: float | None = 30.0


@dataclass(frozen=True)
class ThresholdConfig:
    """Decision thresholds, tuned on the validation split only.

    Attributes:
        start: First threshold of the sweep grid.
        stop: Last threshold of the sweep grid.
        step: Grid step.
        metric: What the global sweep maximises.
        per_label: Also tune one threshold per label (label F1 on
            validation); labels with fewer than ``min_positives`` validation
            positives keep the global threshold.
        min_positives: See ``per_label``.
        always_top1: Always return at least the best-scoring tag.
    """

    start: float = 0.05
    stop: float = 0.95
    step: float = 0.05
    metric: str = "micro_f1"
    per_label: bool = False
    min_positives: int = 3
    always_top1: bool = False


@dataclass(frozen=True)
class SelectionConfig:
    """How ``model.family: auto`` chooses, on the VALIDATION split only.

    Attributes:
        candidates: Candidates trained, in this order (cheapest first), from
            `doctags_core.candidates`: ``tfidf_mlp``, ``cnn`` by default; the
            loss variants ``tfidf_mlp_weighted_bce``, ``tfidf_mlp_focal`` and
            ``cnn_weighted_bce`` put the loss into the choice too (off by
            default: with frequency-bucket thresholds plain BCE did as well
            on macro-F1 and better on micro-F1 where measured).
        ensemble: Also consider the average of the trained candidates'
            scores (one exported graph, one set of thresholds).
        threshold_policies: Threshold policies considered for each option,
            simplest first: ``global`` (one threshold for every label),
            ``bucket`` (one per label-frequency bucket: labels grouped by
            their train documents n into ``min(floor(log2(n + 1)), 10)``),
            ``bucket_per_label`` (buckets, then each label with at least
            ``threshold.min_positives`` validation positives its own,
            shrunk toward its bucket's by its support) and ``per_label``
            (each such label its own, the others the global one).
        folds: Each option is scored by cross-fitting on the validation
            split: thresholds tuned on all folds but one decide that one, in
            turn, so a per-label policy is not judged on the very documents
            it was tuned on. The chosen thresholds are then tuned on the
            whole split.
        repeats: Cross-fitting is repeated on this many shuffles of the
            validation split and the scores averaged (less noise).
        rule: What the choice maximises on the cross-fitted decisions:
            ``sum_f1`` = micro-F1 + macro-F1, so rare labels count as much
            as the bulk of the tags (or ``micro_f1``, ``macro_f1``).
        tolerance: Options within this much of the best score are taken as
            equal (the noise of a validation split): among them the simplest
            threshold policy wins, then the best micro-F1, then the cheapest
            candidate (a candidate alone before the ensemble).
        refit: After the choice, train the winner's members again on train
            + validation, each for the epochs it needed (its best epoch),
            and export those; the thresholds stay the ones chosen on
            validation. The baselines a user compares with fit on all the
            labelled documents too. Takes about the winner's training time
            again (times (train + validation) / train), after
            ``training.budget_minutes``, which bounds the search.
    """

    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    ensemble: bool = True
    threshold_policies: tuple[str, ...] = ("global", "bucket", "bucket_per_label")
    folds: int = 2
    repeats: int = 2
    rule: str = "sum_f1"
    tolerance: float = 0.01
    refit: bool = True


@dataclass(frozen=True)
class ExportConfig:
    """Where the SavedModel goes: ``output_dir/base_dir/model_name/version``.

    Attributes:
        model_name: The model's name: the folder TF Serving and `doctags
            serve` are pointed at (``--model-base-path``), and the name in
            their URLs.
        version: The version folder written. When it already holds a
            SavedModel, `doctags export` and `doctags run` refuse unless
            given ``--overwrite`` (which replaces it atomically; a server
            that loaded it keeps the old model until it restarts). Servers
            load the highest version: raise this to roll a live server
            forward.
        base_dir: Folder of the exported models, relative to ``output_dir``.
    """

    model_name: str = "doctags"
    version: int = 1
    base_dir: str = "export"


@dataclass(frozen=True)
class Config:
    """The root of the config tree.

    Attributes:
        name: Experiment name, used in logs.
        output_dir: Root directory for every artifact of this experiment,
            relative to the config file's directory unless absolute
            (``gs://`` for the Beam job's output on a cluster).
        data: The input: files, format, and which fields hold the text, the
            labels, the id and the split.
        cleaning: The text cleaning, one list of steps shared by the Beam
            job and the exported model.
        preprocess: The Beam job: runner, batching, vocabulary, shards.
        model: The network family and its sizes, and the tokenizer.
        training: Optimisation, batch layout, devices, early stopping and
            checkpoints.
        loss: The training loss and sample weights for imbalanced labels.
        threshold: How decision thresholds are chosen on the validation
            split and baked into the export.
        selection: How ``model.family: auto`` chooses among its candidates,
            on the validation split.
        export: Where the SavedModel is written, under which name and
            version.
        model_subdir: The trained model's directory under ``output_dir``
            (``model``); the candidates of ``model.family: auto`` train in
            ``model/candidates/NAME``.
    """

    name: str = "doctags"
    output_dir: str = "runs/doctags"
    data: DataConfig = field(default_factory=DataConfig)
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    model_subdir: str = "model"

    # Derived locations: one layout for every stage.
    @property
    def data_dir(self) -> str:
        """Directory of the Beam job's TFRecords, vocabularies and metadata."""
        return os.path.join(self.output_dir, "data")

    @property
    def model_dir(self) -> str:
        """Directory of checkpoints, logs and the trained Keras model."""
        return os.path.join(self.output_dir, self.model_subdir)

    @property
    def export_dir(self) -> str:
        """The versioned SavedModel directory."""
        return os.path.join(
            self.output_dir, self.export.base_dir, self.export.model_name, str(self.export.version)
        )

    @property
    def eval_dir(self) -> str:
        """Directory of evaluation reports."""
        return os.path.join(self.output_dir, "eval")


MODEL_FAMILIES = tuple(FAMILIES)
AUTO = "auto"
THRESHOLD_POLICIES = ("global", "bucket", "bucket_per_label", "per_label")  # simplest first
SELECTION_RULES = ("sum_f1", "micro_f1", "macro_f1")
FORMATS = ("auto", "jsonl", "csv", "parquet", "tfrecord")
RUNNING_MODES = ("in_memory", "multi_threading", "multi_processing")
MONITORS = ("val_loss", "val_pr_auc", "val_roc_auc")
LR_SCALING = ("none", "linear")
PRECISIONS = ("float32", "mixed_float16")
THRESHOLD_METRICS = ("micro_f1", "macro_f1", "samples_f1")
LOSSES = ("bce", "weighted_bce", "focal")
SAMPLE_WEIGHTS = ("none", "balanced")
TOKENIZERS = ("word", "wordpiece")
OVERSIZE = ("truncate", "dead_letter")
DUPLICATE_IDS = ("dead_letter", "keep")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce_scalar(value: Any, tp: type, key: str) -> Any:
    """A bool, int, float or str from YAML; bools are never taken as numbers."""
    is_bool = isinstance(value, bool)
    if tp is bool and is_bool:
        return value
    if tp is int and isinstance(value, int) and not is_bool:
        return value
    if tp is float and isinstance(value, (int, float)) and not is_bool:
        return float(value)
    if tp is str and isinstance(value, str):
        return value
    expected = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
    }
    if tp not in expected:
        raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover
    raise ConfigError(f"{key}: expected {expected[tp]}, got {value!r}")


def _coerce_tuple(value: Any, item_type: Any, key: str) -> tuple:
    """A YAML list (or one scalar, read as a list of one) as a tuple."""
    if isinstance(value, (str, int, float)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
    return tuple(_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Converts a YAML value to the annotated type or raises ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if _is_dataclass_type(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        return _coerce_tuple(value, args[0], key)
    return _coerce_scalar(value, tp, key)


def _build(cls: type, raw: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key(s) {', '.join(where + k for k in unknown)}; "
            f"allowed here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name in names:
        if name in raw:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(raw[name], hints[name], key)
    return cls(**kwargs)


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _validate(cfg: Config) -> None:
    d, p, m, t, th = cfg.data, cfg.preprocess, cfg.model, cfg.training, cfg.threshold
    _check(bool(d.input_pattern), "data.input_pattern", "is required")
    _check(d.format in FORMATS, "data.format", f"must be one of {FORMATS}, got {d.format!r}")
    _check(bool(d.text_fields), "data.text_fields", "needs at least one field")
    _check(bool(d.label_field), "data.label_field", "is required")
    _check(bool(d.label_delimiter), "data.label_delimiter", "must not be empty")
    _check(0 <= d.validation_fraction < 1, "data.validation_fraction", "must be in [0, 1)")
    _check(0 <= d.test_fraction < 1, "data.test_fraction", "must be in [0, 1)")
    _check(
        d.validation_fraction + d.test_fraction < 1,
        "data.test_fraction",
        "validation_fraction + test_fraction must be below 1",
    )
    for i, step in enumerate(cfg.cleaning.steps):
        _check(
            step in CLEANING_STEPS,
            f"cleaning.steps[{i}]",
            f"unknown step {step!r}; known steps: {', '.join(CLEANING_STEPS)}",
        )
    _check(p.runner != "", "preprocess.runner", "must not be empty")
    _check(
        p.direct_running_mode in RUNNING_MODES,
        "preprocess.direct_running_mode",
        f"must be one of {RUNNING_MODES}",
    )
    for key in (
        "direct_num_workers",
        "batch_size",
        "vocab_size",
        "min_count",
        "vocab_shards",
        "encode_threads",
    ):
        _check(getattr(p, key) >= 1, f"preprocess.{key}", "must be at least 1")
    _check(p.max_chars >= 1, "preprocess.max_chars", "must be at least 1")
    _check(p.oversize in OVERSIZE, "preprocess.oversize", f"must be one of {OVERSIZE}")
    _check(p.max_record_bytes >= 1024, "preprocess.max_record_bytes", "must be at least 1024")
    _check(
        0 <= p.max_dead_letter_fraction <= 1,
        "preprocess.max_dead_letter_fraction",
        "must be in [0, 1]",
    )
    _check(
        p.duplicate_ids in DUPLICATE_IDS,
        "preprocess.duplicate_ids",
        f"must be one of {DUPLICATE_IDS}",
    )
    _check(p.num_shards >= 0, "preprocess.num_shards", "must be 0 (runner decides) or more")
    _check(
        set(p.raw_text_splits) <= set(SPLITS)
        and len(set(p.raw_text_splits)) == len(p.raw_text_splits),
        "preprocess.raw_text_splits",
        f"must list distinct splits among {list(SPLITS)}, got {list(p.raw_text_splits)}",
    )
    _check(
        1 <= p.compression_level <= 9,
        "preprocess.compression_level",
        f"must be a zlib level from 1 to 9, got {p.compression_level}",
    )
    _check(
        m.family in (AUTO, *MODEL_FAMILIES),
        "model.family",
        f"must be one of {(AUTO, *MODEL_FAMILIES)}, got {m.family!r}",
    )
    for key in (
        "sequence_length",
        "embedding_dim",
        "hidden_units",
        "conv_filters",
        "rnn_units",
        "transformer_layers",
        "transformer_heads",
        "transformer_ff_dim",
    ):
        _check(getattr(m, key) >= 1, f"model.{key}", "must be at least 1")
    _check(0 <= m.dropout < 1, "model.dropout", "must be in [0, 1)")
    _check(m.tokenizer in TOKENIZERS, "model.tokenizer", f"must be one of {TOKENIZERS}")
    _check(m.wordpiece_vocab_size >= 100, "model.wordpiece_vocab_size", "must be at least 100")
    _check(
        not (m.tokenizer == "wordpiece" and m.family == "tfidf_mlp"),
        "model.tokenizer",
        "wordpiece needs a sequence family (IDF weights exist for words only)",
    )
    _check(bool(m.kernel_sizes), "model.kernel_sizes", "needs at least one width")
    _check(all(k >= 1 for k in m.kernel_sizes), "model.kernel_sizes", "widths must be >= 1")
    for key in ("batch_size", "epochs", "shuffle_buffer"):
        _check(getattr(t, key) >= 1, f"training.{key}", "must be at least 1")
    _check(t.learning_rate > 0, "training.learning_rate", "must be positive")
    _check(t.early_stopping_patience >= 0, "training.early_stopping_patience", "must be >= 0")
    _check(
        "train" in t.train_splits
        and set(t.train_splits) <= {"train", "validation"}
        and len(set(t.train_splits)) == len(t.train_splits),
        "training.train_splits",
        "must be [train] or [train, validation]",
    )
    _check(t.monitor in MONITORS, "training.monitor", f"must be one of {MONITORS}")
    _check(t.logical_cpu_devices >= 0, "training.logical_cpu_devices", "must be >= 0")
    _check(t.per_replica_batch_size >= 0, "training.per_replica_batch_size", "must be >= 0")
    _check(
        t.learning_rate_scaling in LR_SCALING,
        "training.learning_rate_scaling",
        f"must be one of {LR_SCALING}",
    )
    _check(t.checkpoint_every_steps >= 0, "training.checkpoint_every_steps", "must be >= 0")
    _check(t.steps_per_call >= 1, "training.steps_per_call", "must be at least 1")
    _check(t.input_shards >= 0, "training.input_shards", "must be >= 0 (0: one per worker)")
    if t.input_shards and not t.per_replica_batch_size:
        _check(
            t.batch_size % t.input_shards == 0,
            "training.input_shards",
            f"must divide training.batch_size ({t.batch_size})",
        )
    _check(
        t.mixed_precision in PRECISIONS,
        "training.mixed_precision",
        f"must be one of {PRECISIONS}",
    )
    _check(0 < th.start <= th.stop < 1, "threshold.start", "need 0 < start <= stop < 1")
    _check(th.step > 0, "threshold.step", "must be positive")
    _check(th.min_positives >= 1, "threshold.min_positives", "must be at least 1")
    lc = cfg.loss
    _check(lc.name in LOSSES, "loss.name", f"must be one of {LOSSES}, got {lc.name!r}")
    _check(lc.pos_weight_power >= 0, "loss.pos_weight_power", "must be >= 0")
    _check(lc.pos_weight_cap >= 1, "loss.pos_weight_cap", "must be >= 1")
    _check(lc.focal_gamma >= 0, "loss.focal_gamma", "must be >= 0")
    _check(
        lc.focal_alpha is None or 0 < lc.focal_alpha < 1,
        "loss.focal_alpha",
        "must be in (0, 1) or null",
    )
    _check(
        lc.sample_weights in SAMPLE_WEIGHTS,
        "loss.sample_weights",
        f"must be one of {SAMPLE_WEIGHTS}, got {lc.sample_weights!r}",
    )
    _check(
        lc.sample_weight_cap is None or lc.sample_weight_cap >= 1,
        "loss.sample_weight_cap",
        "must be >= 1 (weights average 1) or null",
    )
    _check(
        th.metric in THRESHOLD_METRICS, "threshold.metric", f"must be one of {THRESHOLD_METRICS}"
    )
    _check(cfg.export.version >= 1, "export.version", "must be at least 1")
    _validate_selection(cfg)
    _check(bool(cfg.export.model_name), "export.model_name", "must not be empty")


def _validate_selection(cfg: Config) -> None:
    s, t = cfg.selection, cfg.training
    _check(bool(s.candidates), "selection.candidates", "needs at least one candidate")
    for i, name in enumerate(s.candidates):
        _check(
            name in CANDIDATES,
            f"selection.candidates[{i}]",
            f"unknown candidate {name!r}; known: {', '.join(CANDIDATES)}",
        )
    _check(len(set(s.candidates)) == len(s.candidates), "selection.candidates", "has repeats")
    _check(bool(s.threshold_policies), "selection.threshold_policies", "needs a policy")
    for i, policy in enumerate(s.threshold_policies):
        _check(
            policy in THRESHOLD_POLICIES,
            f"selection.threshold_policies[{i}]",
            f"must be one of {THRESHOLD_POLICIES}, got {policy!r}",
        )
    _check(s.folds >= 2, "selection.folds", "must be at least 2")
    _check(s.repeats >= 1, "selection.repeats", "must be at least 1")
    _check(s.tolerance >= 0, "selection.tolerance", "must be >= 0")
    _check(s.rule in SELECTION_RULES, "selection.rule", f"must be one of {SELECTION_RULES}")
    _check(t.budget_minutes > 0, "training.budget_minutes", "must be positive")
    _check(bool(cfg.model_subdir), "model_subdir", "must not be empty")


def _resolve_paths(cfg: Config, base_dir: str) -> Config:
    def absolute(path: str) -> str:
        if "://" in path or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(base_dir, path))

    data = dataclasses.replace(
        cfg.data, input_pattern=tuple(absolute(p) for p in cfg.data.input_pattern)
    )
    return dataclasses.replace(cfg, data=data, output_dir=absolute(cfg.output_dir))


def _renamed_keys(raw: dict) -> dict:
    """``raw`` with keys of older configs under their current names.

    Configs saved beside older runs and models hold
    ``preprocess.keep_raw_text`` (true: every split keeps its raw text;
    false: none), which ``preprocess.raw_text_splits`` replaced; they still
    load, with the same meaning.
    """
    pre = raw.get("preprocess")
    if not isinstance(pre, dict) or "keep_raw_text" not in pre:
        return raw
    if "raw_text_splits" in pre:
        raise ConfigError(
            "preprocess.keep_raw_text: replaced by preprocess.raw_text_splits; set only that one"
        )
    keep = pre["keep_raw_text"]
    if not isinstance(keep, bool):
        raise ConfigError(f"preprocess.keep_raw_text: expected true or false, got {keep!r}")
    pre = {k: v for k, v in pre.items() if k != "keep_raw_text"}
    pre["raw_text_splits"] = list(SPLITS) if keep else []
    return {**raw, "preprocess": pre}


def config_from_dict(raw: dict, base_dir: str = ".", check_inputs: bool = True) -> Config:
    """Builds and validates a Config from a plain mapping.

    Args:
        raw: Parsed YAML.
        base_dir: Directory that relative paths are resolved against.
        check_inputs: Also require every input glob to match a local file.
            Remote (``gs://``-style) patterns are left to the runner.

    Returns:
        The validated, frozen config with absolute paths.

    Raises:
        ConfigError: naming the key at fault.
    """
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a YAML mapping at the top level")
    cfg = _resolve_paths(_build(Config, _renamed_keys(raw), ""), base_dir)
    _validate(cfg)
    if check_inputs:
        for pattern in cfg.data.input_pattern:
            if "://" not in pattern and not glob.glob(pattern):
                raise ConfigError(f"data.input_pattern: no file matches {pattern!r}")
    return cfg


def load_config(path: str, overrides: dict | None = None, check_inputs: bool = True) -> Config:
    """Loads a YAML config file, applying optional dotted-key overrides.

    Args:
        path: The YAML file.
        overrides: ``{"training.epochs": 2}``-style values applied before
            validation, so they are validated like the file itself.
        check_inputs: See `config_from_dict`.

    Raises:
        ConfigError: for a missing file, invalid YAML or any invalid key.
    """
    if not os.path.exists(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from e
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config_from_dict(
        raw, base_dir=os.path.dirname(os.path.abspath(path)), check_inputs=check_inputs
    )


def config_to_dict(cfg: Config) -> dict:
    """Plain-data form of the config (tuples as lists), for YAML and JSON."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def config_to_yaml(cfg: Config) -> str:
    """The resolved config as YAML text, saved next to every artifact."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, directory: str, filename: str = "config.yaml") -> str:
    """Writes the resolved config into ``directory`` (local or remote), atomically."""
    import tensorflow as tf  # gfile makes directories on local disk and gs:// alike.

    from doctags_core.atomic_files import atomic_write

    tf.io.gfile.makedirs(directory)
    return atomic_write(os.path.join(directory, filename), config_to_yaml(cfg))
