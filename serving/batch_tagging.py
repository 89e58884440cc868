"""Batch tagging at corpus scale: a Beam job over the export, built on RunInference.

    ReadRawRecords -> ParseForTagging -> RunInference(DoctagsModelHandler) -> WriteTags
          |                |                                                    |
          +----------------+-> WriteDeadLetters                                 +-> summary.json

The input is read exactly as preprocessing reads it (JSONL, CSV, Parquet,
TFRecord; several globs; `doctags_core.beam_io`), with the text and id
fields of the config the model was trained with (shipped in the export's
assets), and it runs on the same runners: the in-process FnApiRunner here,
Dataflow or Flink by options. Elements are batches end to end: each example
the model handler sees is a batch of documents, run through the SavedModel
with TF Serving's own session-based loader (`doctags_core.tagger`), so the
tags are the served model's. Beam's stock ``TFModelHandlerTensor`` cannot
load the export under Keras 3 (it calls Keras' ``load_model`` and its module
imports tensorflow_hub), hence doctags' own handler. What the workers run
(the handler, the parse and summary steps) is in `doctags_core.beam_tagging`,
so remote workers install the same worker package as preprocessing.

Output: ``part-*.jsonl`` rows ``{"id", "tags", "tag_scores"}`` (plus
``"scores"``, one per label, with ``with_scores``), ``dead_letter/part-*.jsonl``
for rows that cannot be tagged (with the reason), and ``summary.json`` whose
``all_records_accounted_for`` says records read == rows written + dead letters.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence

import apache_beam as beam
import yaml
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference

from doctags_core import beam_io, beam_tagging
from doctags_core import export_contract as contract
from doctags_core.beam_tagging import SUMMARY_FILE
from doctags_core.config import DataConfig, config_from_dict

log = logging.getLogger(__name__)

OUTPUT_PREFIX = "part"


def model_data_config(model_path: str, input_patterns: Sequence[str], **overrides) -> DataConfig:
    """The export's training-time ``data`` settings, pointed at the inputs to tag.

    The text fields and id rule come from the config the model was trained
    with (``assets/config.yaml``), so a corpus shaped like the training data
    needs no options; ``overrides`` (e.g. ``text_fields``, ``id_field``,
    ``format``) change them for another shape.
    """
    version_dir = contract.resolve_version_dir(model_path)
    with FileSystems.open(contract.asset_path(version_dir, contract.CONFIG_ASSET)) as f:
        raw = yaml.safe_load(f.read().decode("utf-8"))
    data = {**raw["data"], "input_pattern": list(input_patterns), "split_field": None}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict({"data": data}, check_inputs=False).data


def build_tagging_pipeline(
    pipeline: beam.Pipeline,
    data: DataConfig,
    model_path: str,
    output_dir: str,
    batch_size: int = 512,
    with_scores: bool = False,
) -> None:
    """Adds the whole batch-tagging graph to ``pipeline``."""
    read = pipeline | "ReadRawRecords" >> beam_io.ReadRawRecords(data, batch_size)
    parsed = read["records"] | "ParseForTagging" >> beam.ParDo(
        beam_tagging.parse_for_tagging, data
    ).with_outputs(beam_io.DEAD_LETTER_TAG, main="docs")
    tagged = parsed.docs | "TagBatches" >> RunInference(
        beam_tagging.DoctagsModelHandler(model_path, with_scores)
    )
    _ = (
        tagged
        | "RowsToJsonl" >> beam.Map(beam_tagging.rows_to_text)
        | "WriteTags"
        >> beam.io.WriteToText(
            os.path.join(output_dir, OUTPUT_PREFIX), file_name_suffix=".jsonl", num_shards=0
        )
    )
    dead_counts = (
        (read[beam_io.DEAD_LETTER_TAG], parsed[beam_io.DEAD_LETTER_TAG])
        | "AllDeadLetters" >> beam.Flatten()
        | "WriteDeadLetters" >> beam_io.WriteDeadLetters(output_dir)
    )
    records_read = (
        (
            read["records"] | "RecordsPerBatch" >> beam.Map(len),
            read[beam_io.DEAD_LETTER_TAG] | "OnePerReadError" >> beam.Map(lambda _: 1),
        )
        | "AllRecordCounts" >> beam.Flatten()
        | "CountRecordsRead" >> beam.CombineGlobally(sum)
    )
    written = (
        tagged | "RowsPerBatch" >> beam.Map(len) | "CountRowsWritten" >> beam.CombineGlobally(sum)
    )
    _ = (
        pipeline
        | "SummaryTrigger" >> beam.Create([None])
        | "WriteSummary"
        >> beam.Map(
            beam_tagging.write_summary,
            beam.pvalue.AsSingleton(records_read),
            beam.pvalue.AsSingleton(written),
            beam.pvalue.AsSingleton(dead_counts),
            output_dir,
        )
    )


def _prepare_output(output_dir: str, overwrite: bool) -> None:
    """An empty output directory: earlier results are never mixed with new ones.

    Raises:
        FileExistsError: when it holds files and ``overwrite`` is False.
    """
    patterns = [os.path.join(output_dir, "*"), os.path.join(output_dir, "dead_letter", "*")]
    existing = [m.path for r in FileSystems.match(patterns) for m in r.metadata_list]
    if existing and not overwrite:
        raise FileExistsError(f"{output_dir} is not empty; choose another --output or --overwrite")
    if existing:
        FileSystems.delete(existing)
    if not FileSystems.exists(output_dir):
        FileSystems.mkdirs(output_dir)


@dataclasses.dataclass(frozen=True)
class TaggingJob:
    """One batch-tagging run.

    Attributes:
        model_path: The export (version directory or base path).
        input_patterns: Globs of the documents to tag.
        output_dir: Where the JSONL shards, dead letters and summary go.
        with_scores: Also write every label's score.
        overwrite: Replace the output directory's files.
        data_overrides: ``DataConfig`` fields to change (``text_fields``, ...).
    """

    model_path: str
    input_patterns: tuple[str, ...]
    output_dir: str
    with_scores: bool = False
    overwrite: bool = False
    data_overrides: tuple[tuple[str, object], ...] = ()


def run_tagging(job: TaggingJob, beam_args: list[str] | None = None) -> dict:
    """Runs the batch-tagging job to completion and returns its summary.

    Raises:
        FileExistsError: when the output directory has files and not ``overwrite``.
    """
    data = model_data_config(job.model_path, job.input_patterns, **dict(job.data_overrides))
    _prepare_output(job.output_dir, job.overwrite)
    options = beam_io.pipeline_options("DirectRunner", beam_args=beam_args)
    log.info(
        "tagging %s with %s -> %s", ", ".join(job.input_patterns), job.model_path, job.output_dir
    )
    with beam_io.make_pipeline(options) as pipeline:
        build_tagging_pipeline(
            pipeline, data, job.model_path, job.output_dir, with_scores=job.with_scores
        )
    with FileSystems.open(os.path.join(job.output_dir, SUMMARY_FILE)) as f:
        return json.loads(f.read().decode("utf-8"))
