"""The tf.Transform peer of `doctags preprocess`, for bench/preprocess.py.

Runs with the Python of the bench's own tf.Transform virtualenv (never a
doctags dependency); bench/preprocess.py builds that environment and starts
this script as a child process on the same corpus as ``doctags preprocess``.

It is the job a user would write with tf.Transform instead of doctags' Beam
job, doing the comparable work:

* read the same JSONL.gz corpus (``doctags synth`` output) with
  ``ReadFromText``, parse each line, join the text fields with a newline
  and assign train/validation/test by id hash, with doctags' own functions;
* in the ``preprocessing_fn``, clean the text with
  ``doctags_core.cleaning.clean_text`` (the same TF ops, imported from the
  repository on ``sys.path``), split it into tokens with ``tf.strings.split``,
  and ``tft.compute_and_apply_vocabulary`` over the tokens
  (``top_k`` = vocab_size, ``frequency_threshold`` = min_count) and over the
  labels;
* analyze on the train split and transform it
  (``AnalyzeAndTransformDataset``), transform validation and test with the
  same transform function (``TransformDataset``), and write the transformed
  examples (id, token ids, label ids) as gzipped TFRecords
  (``EncodeTransformedDataset`` + ``WriteToTFRecord``) and the transform
  function (its assets are the vocabularies).

The runner is named ``FnApiRunner``: in Beam 2.77 ``DirectRunner`` means the
SwitchingDirectRunner, which first tries the Prism runner (it downloads a
binary) and falls back to the in-process FnApiRunner only when that fails.
The last line printed is a JSON summary (counts, versions, runner).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
import sys
import tempfile
import time

STARTED = time.perf_counter()  # imports and pipeline construction count as start-up
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from doctags_core.cleaning import clean_text  # noqa: E402
from doctags_core.splits import assign_split  # noqa: E402


def parse_line(line: str, text_fields: tuple[str, ...]) -> dict:
    """One JSON line -> the raw instance dict tf.Transform reads."""
    row = json.loads(line)
    text = "\n".join(row[k] for k in text_fields if row.get(k))
    return {
        "id": str(row["id"]),
        "text": text.encode("utf-8"),
        "labels": [str(label).encode("utf-8") for label in row["labels"]],
    }


def split_of(doc: dict, _num_partitions: int, validation: float, test: float) -> int:
    return ("train", "validation", "test").index(assign_split(doc["id"], None, validation, test))


def make_preprocessing_fn(steps: tuple[str, ...], vocab_size: int, min_count: int):
    import tensorflow as tf
    import tensorflow_transform as tft

    def preprocessing_fn(inputs):
        # The JSON parser's .encode("utf-8") guarantees valid UTF-8, as doctags'
        # parser does by dead-lettering, so both skip the UTF-8 repair pass.
        cleaned = clean_text(inputs["text"], steps, assume_valid_utf8=True)
        tokens = tf.strings.split(cleaned).to_sparse()
        token_ids = tft.compute_and_apply_vocabulary(
            tokens,
            top_k=vocab_size,
            frequency_threshold=min_count,
            num_oov_buckets=1,
            vocab_filename="tokens",
        )
        label_ids = tft.compute_and_apply_vocabulary(inputs["labels"], vocab_filename="labels")
        return {"id": inputs["id"], "token_ids": token_ids, "label_ids": label_ids}

    return preprocessing_fn


# Where the job's time goes: the runner's execution time of each step, grouped.
STEP_GROUPS = (
    ("analyze: clean + split tokens in TF (ApplySavedModel)", ("ApplySavedModel[Phase0]",)),
    ("analyze: count tokens per key in Beam (Vocabulary*)", ("/Vocabulary",)),
    ("analyze: trace and save models", ("CreateSavedModel",)),
    ("transform: clean + split + look up again in TF", ("/Transform", "TransformDataset/")),
    ("instance dicts -> tf.Example -> RecordBatch", ("InstanceDictToRecordBatch",)),
    ("encode + write TFRecords", ("Encode_", "Count_", "Write_", "WriteTransformFn")),
    ("read + parse JSON + split", ("Read/", "Parse", "Split")),
)


def step_seconds(result) -> dict:
    """Seconds per `STEP_GROUPS` group (wall time of the step in the worker thread).

    The runner's state sampler charges each step the time its bundles spent
    in it, waiting for TensorFlow's kernel threads included; it is not CPU time.
    """
    groups: dict = {}
    for c in result.monitoring_metrics().query()["counters"]:
        if "ptransform_execution_time:total_msecs" not in c.key.metric.name:
            continue
        name = next(
            (g for g, keys in STEP_GROUPS if any(k in c.key.step for k in keys)), "other steps"
        )
        groups[name] = groups.get(name, 0.0) + c.committed / 1000
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


def run(args) -> dict:
    import apache_beam as beam
    import tensorflow as tf
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    raw_metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(
            {
                "id": tf.io.FixedLenFeature([], tf.string),
                "text": tf.io.FixedLenFeature([], tf.string),
                "labels": tf.io.VarLenFeature(tf.string),
            }
        )
    )
    steps = tuple(args.steps.split(","))
    text_fields = tuple(args.text_fields.split(","))
    options = PipelineOptions(
        [f"--runner={args.runner}", "--direct_running_mode=in_memory", *args.beam_args]
    )
    data_dir = os.path.join(args.output_dir, "data")
    stale = [data_dir, os.path.join(args.output_dir, "transform_fn")]
    stale += glob.glob(os.path.join(args.output_dir, "tft-temp-*"))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)  # an earlier run's shards would match globs
    os.makedirs(args.output_dir, exist_ok=True)
    temp_dir = tempfile.mkdtemp(prefix="tft-temp-", dir=args.output_dir)

    def counted(split):
        counter = beam.metrics.Metrics.counter("tft_peer", f"written_{split}")

        def count(example):
            counter.inc()
            return example

        return count

    pipeline = beam.Pipeline(options=options)
    with tft_beam.Context(temp_dir=temp_dir, desired_batch_size=args.desired_batch_size):
        docs = (
            pipeline
            | "Read" >> beam.io.ReadFromText(args.input)
            | "Parse" >> beam.Map(parse_line, text_fields)
        )
        train, validation, test = docs | "Split" >> beam.Partition(
            split_of, 3, args.validation_fraction, args.test_fraction
        )
        preprocessing_fn = make_preprocessing_fn(steps, args.vocab_size, args.min_count)
        (transformed_train, transformed_metadata), transform_fn = (
            train,
            raw_metadata,
        ) | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(
            preprocessing_fn, output_record_batches=True
        )
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(
            os.path.join(args.output_dir, "transform_fn")
        )
        transformed = {"train": (transformed_train, transformed_metadata)}
        for name, split in (("validation", validation), ("test", test)):
            transformed[name] = (
                (split, raw_metadata),
                transform_fn,
            ) | f"Transform_{name}" >> tft_beam.TransformDataset(output_record_batches=True)
        for name, dataset in transformed.items():
            _ = (
                dataset
                | f"Encode_{name}" >> tft_beam.EncodeTransformedDataset()
                | f"Count_{name}" >> beam.Map(counted(name))
                | f"Write_{name}"
                >> beam.io.WriteToTFRecord(
                    os.path.join(data_dir, name, "part"), file_name_suffix=".tfrecord.gz"
                )
            )
        constructed = time.perf_counter()
        result = pipeline.run()
        result.wait_until_finish()
        ran = time.perf_counter() - constructed
    shutil.rmtree(temp_dir, ignore_errors=True)
    written = {
        c.key.metric.name.removeprefix("written_"): c.committed
        for c in result.metrics().query()["counters"]
        if c.key.metric.namespace == "tft_peer"
    }
    return {
        "written": written,
        "documents": sum(written.values()),
        "runner": type(pipeline.runner).__name__,
        "runner_result": type(result).__module__ + "." + type(result).__name__,
        "transform_fn": os.path.join(args.output_dir, "transform_fn"),
        "construction_seconds": constructed - STARTED,
        "run_seconds": ran,
        "step_seconds": step_seconds(result),
    }


def check(output_dir: str) -> dict:
    """Reads back what `run` wrote: records per split, vocabulary, id ranges.

    Not part of the timed job; the bench runs it afterwards as a sanity check.
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(os.path.join(output_dir, "transform_fn"))
    spec = output.transformed_feature_spec()
    vocab_size = output.vocabulary_size_by_name("tokens")
    records, sample = {}, {}
    for split in ("train", "validation", "test"):
        files = sorted(glob.glob(os.path.join(output_dir, "data", split, "*.tfrecord.gz")))
        dataset = tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=4)
        records[split] = int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
        if split == "train":
            batch = next(iter(dataset.batch(1000).map(lambda x: tf.io.parse_example(x, spec))))
            ids = batch["token_ids"].values.numpy()
            sample = {
                "documents": int(batch["id"].shape[0]),
                "tokens_per_document": float(len(ids) / batch["id"].shape[0]),
                "max_token_id": int(ids.max()),
                "oov_share": float((ids >= vocab_size).mean()),
                "labels_per_document": float(len(batch["label_ids"].values) / batch["id"].shape[0]),
            }
    return {
        "records": records,
        "token_vocabulary_size": vocab_size,
        "label_vocabulary_size": output.vocabulary_size_by_name("labels"),
        "token_vocabulary_file": output.vocabulary_file_by_name("tokens"),
        "train_sample": sample,
        "feature_spec": {k: type(v).__name__ for k, v in spec.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--input", help="glob of JSONL(.gz) files")
    parser.add_argument("--text-fields", default="title,text")
    parser.add_argument("--steps", help="comma-separated cleaning steps")
    parser.add_argument("--vocab-size", type=int)
    parser.add_argument("--min-count", type=int)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--runner", default="FnApiRunner")
    parser.add_argument(
        "--desired-batch-size", type=int, help="tf.Transform's batch size (default: auto-tuned)"
    )
    parser.add_argument("--check", action="store_true", help="read back an earlier run's output")
    args, args.beam_args = parser.parse_known_args()
    if args.check:
        print(json.dumps(check(args.output_dir)), flush=True)
        return 0
    missing = [f for f in ("input", "steps", "vocab_size", "min_count") if getattr(args, f) is None]
    if missing:
        parser.error("required: " + ", ".join("--" + f.replace("_", "-") for f in missing))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    summary = run(args)
    import apache_beam
    import tensorflow
    import tensorflow_transform

    summary["seconds"] = time.perf_counter() - STARTED
    summary["versions"] = {
        "python": sys.version.split()[0],
        "tensorflow-transform": tensorflow_transform.__version__,
        "tensorflow": tensorflow.__version__,
        "apache-beam": apache_beam.__version__,
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    # This environment (TF 2.21, tfx-bsl 1.21, pyarrow 25) segfaults in the
    # garbage collection at interpreter exit after a pipeline ran; the job's
    # output is complete by then, so leave without tearing the interpreter down.
    os._exit(code)
