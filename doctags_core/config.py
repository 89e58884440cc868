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

from doctags_core.cleaning import CLEANING_STEPS


class ConfigError(ValueError):
    """A config that cannot be used; the message names the offending key."""


@dataclass(frozen=True)
class DataConfig:
    """Where the raw documents are and how to read their fields.

    Attributes:
        input_pattern: Glob(s) of input files, relative to the config file's
            directory unless absolute. Several globs may be given as a list.
        format: ``jsonl`` or ``csv``; ``auto`` picks by file extension.
        id_field: Field holding a unique document id, used for deterministic
            splitting. ``None`` derives the id from a hash of the text.
        text_fields: Fields joined (with a newline) into the document text.
        label_field: Field holding the labels: a JSON list, or a string split
            on ``label_delimiter`` with blanks stripped.
        label_delimiter: Delimiter for string-valued labels.
        split_field: Optional field with ``train``/``validation``/``test``.
        validation_fraction: Share of train documents (by id hash) moved to
            validation.
        test_fraction: Share of documents (by id hash) used as test when the
            data has no split field.
        allow_unlabeled: Keep documents whose label list is empty (as
            all-negative examples) instead of dead-lettering them.
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


@dataclass(frozen=True)
class CleaningConfig:
    """Ordered text-cleaning steps (see `doctags_core.cleaning`)."""

    steps: tuple[str, ...] = (
        "remove_urls",
        "strip_html",
        "lowercase",
        "expand_contractions",
        "drop_tokens_with_digits",
        "letters_only",
        "remove_stopwords",
    )


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
        vocab_size: Keep at most this many tokens (most frequent first).
        min_count: Drop tokens seen fewer times in the train split.
        vocab_shards: Key space for the distributed token count combine.
        num_shards: TFRecord shards per split (0 lets the runner decide).
        keep_raw_text: Store the raw text in each example, for end-to-end
            evaluation of the exported model and skew checks.
    """

    runner: str = "DirectRunner"
    direct_running_mode: str = "in_memory"
    direct_num_workers: int = 1
    batch_size: int = 512
    vocab_size: int = 20000
    min_count: int = 2
    vocab_shards: int = 16
    num_shards: int = 2
    keep_raw_text: bool = True


@dataclass(frozen=True)
class ModelConfig:
    """Network shape. ``family`` picks the builder in `trainer.models`."""

    family: str = "cnn"
    sequence_length: int = 300
    embedding_dim: int = 128
    hidden_units: int = 256
    dropout: float = 0.3
    conv_filters: int = 128
    kernel_sizes: tuple[int, ...] = (3, 4, 5)


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation and distribution settings.

    Attributes:
        batch_size: GLOBAL batch size, split across replicas.
        epochs: Maximum epochs; early stopping may end sooner.
        learning_rate: Adam learning rate for the global batch.
        early_stopping_patience: Epochs without improvement of ``monitor``.
        monitor: Validation metric for early stopping and best checkpoint.
        devices: Devices for MirroredStrategy; empty means all GPUs, or the
            CPU when there is none.
        logical_cpu_devices: Split the CPU into this many logical devices
            (0 = leave as is); how multi-device code is tested without GPUs.
        shuffle_buffer: Examples held by the shuffle buffer.
        seed: Seed for weights and shuffling.
    """

    batch_size: int = 64
    epochs: int = 15
    learning_rate: float = 0.001
    early_stopping_patience: int = 3
    monitor: str = "val_pr_auc"
    devices: tuple[str, ...] = ()
    logical_cpu_devices: int = 0
    shuffle_buffer: int = 10000
    seed: int = 42


@dataclass(frozen=True)
class ThresholdConfig:
    """Decision-threshold sweep on the validation split."""

    start: float = 0.05
    stop: float = 0.95
    step: float = 0.05
    metric: str = "micro_f1"


@dataclass(frozen=True)
class ExportConfig:
    """Where the SavedModel goes: ``base_dir/model_name/version``."""

    model_name: str = "doctags"
    version: int = 1
    base_dir: str = "export"


@dataclass(frozen=True)
class Config:
    """The root of the config tree.

    Attributes:
        name: Experiment name, used in logs.
        output_dir: Root directory for every artifact of this experiment,
            relative to the config file's directory unless absolute.
    """

    name: str = "doctags"
    output_dir: str = "runs/doctags"
    data: DataConfig = field(default_factory=DataConfig)
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    # Derived locations: one layout for every stage.
    @property
    def data_dir(self) -> str:
        """Directory of the Beam job's TFRecords, vocabularies and metadata."""
        return os.path.join(self.output_dir, "data")

    @property
    def model_dir(self) -> str:
        """Directory of checkpoints, logs and the trained Keras model."""
        return os.path.join(self.output_dir, "model")

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


MODEL_FAMILIES = ("dnn", "cnn")
FORMATS = ("auto", "jsonl", "csv")
RUNNING_MODES = ("in_memory", "multi_threading", "multi_processing")
MONITORS = ("val_loss", "val_pr_auc", "val_roc_auc")
THRESHOLD_METRICS = ("micro_f1", "macro_f1", "samples_f1")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


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
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


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
    for key in ("direct_num_workers", "batch_size", "vocab_size", "min_count", "vocab_shards"):
        _check(getattr(p, key) >= 1, f"preprocess.{key}", "must be at least 1")
    _check(p.num_shards >= 0, "preprocess.num_shards", "must be 0 (runner decides) or more")
    _check(
        m.family in MODEL_FAMILIES,
        "model.family",
        f"must be one of {MODEL_FAMILIES}, got {m.family!r}",
    )
    for key in ("sequence_length", "embedding_dim", "hidden_units", "conv_filters"):
        _check(getattr(m, key) >= 1, f"model.{key}", "must be at least 1")
    _check(0 <= m.dropout < 1, "model.dropout", "must be in [0, 1)")
    _check(bool(m.kernel_sizes), "model.kernel_sizes", "needs at least one width")
    _check(all(k >= 1 for k in m.kernel_sizes), "model.kernel_sizes", "widths must be >= 1")
    for key in ("batch_size", "epochs", "shuffle_buffer"):
        _check(getattr(t, key) >= 1, f"training.{key}", "must be at least 1")
    _check(t.learning_rate > 0, "training.learning_rate", "must be positive")
    _check(t.early_stopping_patience >= 0, "training.early_stopping_patience", "must be >= 0")
    _check(t.monitor in MONITORS, "training.monitor", f"must be one of {MONITORS}")
    _check(t.logical_cpu_devices >= 0, "training.logical_cpu_devices", "must be >= 0")
    _check(0 < th.start <= th.stop < 1, "threshold.start", "need 0 < start <= stop < 1")
    _check(th.step > 0, "threshold.step", "must be positive")
    _check(
        th.metric in THRESHOLD_METRICS, "threshold.metric", f"must be one of {THRESHOLD_METRICS}"
    )
    _check(cfg.export.version >= 1, "export.version", "must be at least 1")
    _check(bool(cfg.export.model_name), "export.model_name", "must not be empty")


def _resolve_paths(cfg: Config, base_dir: str) -> Config:
    def absolute(path: str) -> str:
        if "://" in path or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(base_dir, path))

    data = dataclasses.replace(
        cfg.data, input_pattern=tuple(absolute(p) for p in cfg.data.input_pattern)
    )
    return dataclasses.replace(cfg, data=data, output_dir=absolute(cfg.output_dir))


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
    cfg = _resolve_paths(_build(Config, raw, ""), base_dir)
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
    """Writes the resolved config into ``directory`` (local or remote)."""
    import tensorflow as tf  # gfile writes to local disk and to gs:// alike.

    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, filename)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(config_to_yaml(cfg))
    return path
