"""The ``doctags`` command line: thin parsing over the stages' library functions.

doctags [-v] COMMAND ...   (-v: also the libraries' logs: Beam, TensorFlow, absl, CUDA probing)
doctags preprocess --config C [--strict] [--set KEY=VALUE ...] [-- BEAM_OPTIONS ...]
doctags train      --config C
doctags export     --config C [--overwrite]
doctags evaluate   --config C [--model DIR] [--split test]
doctags predict    (--model DIR | --server URL [--model-name N]) (TEXT ... | --input FILE)
doctags predict    --model DIR --input GLOB [--input GLOB ...] --output DIR [-- BEAM_OPTIONS]
doctags serve      --model-base-path DIR [--model-name N] [--rest-port P] [--grpc-port P]
doctags run        --config C [--strict] [--overwrite]    (all of the above, in order)
doctags synth      --out DIR [--documents N] [--labels N] [--format jsonl|csv|parquet|tfrecord]
doctags init       --input FILE [--out CONFIG]  (a commented config for your data)
doctags config     --explain [KEY] [--markdown] (every config key, its default and meaning)

Exit status: 0 done; 1 failed; 2 a config, input or data-folder problem found
before any work (the message names the key or the file); 3 the data report
rejected the preprocessed data (nothing published, the previous dataset kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator

from doctags import console

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import yaml

from doctags_core.config import Config, ConfigError, load_config
from doctags_core.data_checks import DataRejected, format_report
from doctags_core.data_files import DataError
from doctags_core.data_sample import SampleError
from doctags_core.field_detection import DetectionError
from serving.errors import ServingError

log = logging.getLogger("doctags")


def _parse_overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def _config(args) -> Config:
    cfg = load_config(args.config, _parse_overrides(args.set))
    if args.command in ("export", "run"):
        check_export_target(cfg, args.overwrite)  # in milliseconds, not after the work
    if args.command in ("train", "run"):
        # Logical devices must be set before any TensorFlow op runs. Importing
        # TensorFlow here, before the Beam job of `run`, also keeps the job's
        # thread-pool tuning (doctags_core/tf_runtime.py) out of training.
        from trainer.distribute import configure_logical_cpus

        configure_logical_cpus(cfg.training.logical_cpu_devices)
    return cfg


def cmd_preprocess(cfg: Config, args) -> dict:
    """Runs the Beam job, prints its summary and the data report."""
    from beam_preprocess.pipeline import run_preprocess
    from doctags_core.data_files import read_report

    started = time.time()
    metadata = run_preprocess(
        cfg, args.beam_args, strict=args.strict, terminal=getattr(args, "terminal", None)
    )
    docs, dead = metadata["documents"], metadata["dead_letter"]
    print(
        f"preprocess: {metadata['records_read']} records read in {time.time() - started:.1f}s: "
        f"train {docs['train']}, validation {docs['validation']}, test {docs['test']}; "
        f"dead-letter {dead['total']} {dead['by_reason'] or ''}".rstrip()
    )
    print(
        f"  vocabulary {metadata['vocabulary_size']} tokens, "
        f"{metadata['label_vocabulary_size']} labels -> {cfg.data_dir} (run {metadata['run_id']})"
    )
    report = read_report(cfg.data_dir)
    if report is not None and report["findings"]:
        print(format_report(report, args.strict))
    return metadata


def cmd_train(cfg: Config, args):
    """Trains and prints the validation result."""
    from trainer.train import train

    result = train(cfg)
    if not result.chief:  # a multi-worker run: the chief prints and writes the results
        print(f"train: {result.epochs_run} epochs in {result.seconds:.0f}s (worker, not chief)")
        return result
    v = result.validation_metrics
    print(
        f"train: {result.epochs_run} epochs in {result.seconds:.0f}s; validation threshold "
        f"{result.threshold:.2f}: micro-F1 {v['micro_f1']:.4f}, macro-F1 {v['macro_f1']:.4f}"
    )
    return result


def cmd_export(cfg: Config, args) -> str:
    """Exports the SavedModel and prints its path."""
    from trainer.export import export_model

    path = export_model(cfg, overwrite=args.overwrite)
    print(f"export: {path}")
    return path


def cmd_evaluate(cfg: Config, args) -> dict:
    """Evaluates the exported model and prints the report."""
    from evaluation.evaluate import evaluate, format_report

    report = evaluate(args.model or cfg.export_dir, cfg.data_dir, cfg.eval_dir, args.split)
    print(format_report(report))
    print(f"metrics: {os.path.join(cfg.eval_dir, f'metrics_{args.split}.json')}")
    print(f"report:  {os.path.join(cfg.eval_dir, f'report_{args.split}.html')}")
    return report


PREDICT_BATCH = 256  # texts per model call or server request


def _text_batches(args) -> Iterator[list[str]]:
    """The TEXT arguments, then ``--input``'s lines, in batches; every line is one text.

    The file is streamed (never read whole) and empty lines are kept, so the
    output has exactly one row per input line.
    """
    if args.texts:
        yield list(args.texts)
    if not args.input:
        return
    stream = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    with stream:
        batch = []
        for line in stream:
            batch.append(line.rstrip("\r\n"))
            if len(batch) == PREDICT_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


def format_predictions(texts: list[str], predictions, width: int = 70) -> str:
    """One block per text: a shortened text line, then its tags with scores."""
    out = []
    for text, tags in zip(texts, predictions):
        short = " ".join(text.split())
        short = short if len(short) <= width else short[: width - 3] + "..."
        shown = ", ".join(f"{t} ({s:.2f})" for t, s in tags) or "(no tag above threshold)"
        out.append(f"{short}\n  -> {shown}")
    return "\n".join(out)


def _tag_function(args):
    """``texts -> [(tag, score), ...] per text`` for a local export or a server."""
    if args.server:
        from serving.client import connect

        try:
            client = connect(args.server, args.model_name, args.model_version)
        except ValueError as e:
            raise SystemExit(f"doctags predict: error: {e}") from None
        return client.tag
    from doctags_core.tagger import Tagger

    return Tagger(args.model).predict


def cmd_predict(args) -> int:
    """Tags texts given on the command line or in a file (one per line); or a corpus.

    With ``--server`` the texts go to a TF Serving compatible server (REST
    ``http://host:port`` or ``grpc://host:port``) instead of a local SavedModel.
    With ``--output`` the inputs are corpus globs, tagged by the Beam job of
    `serving.batch_tagging`. Returns the number of texts tagged.
    """
    if args.output:
        return cmd_batch_tag(args)
    if args.input and len(args.input) > 1:
        raise SystemExit("doctags predict: one --input FILE without --output (globs need --output)")
    args.input = args.input[0] if args.input else None
    if not args.texts and not args.input:
        raise SystemExit("doctags predict: give TEXT arguments or --input FILE")
    tag, count = _tag_function(args), 0
    for texts in _text_batches(args):
        predictions = tag(texts)
        for text, tags in zip(texts, predictions):
            if args.json:
                print(json.dumps({"text": text, "tags": [{"tag": t, "score": s} for t, s in tags]}))
            else:
                print(format_predictions([text], [tags]))
        count += len(texts)
    return count


def cmd_batch_tag(args) -> int:
    """``predict --model DIR --input GLOB --output DIR``: the Beam job; prints its summary."""
    from serving.batch_tagging import TaggingJob, run_tagging

    if not args.model:
        raise SystemExit("doctags predict: --output tags a corpus with --model, not --server")
    overrides = {"text_fields": args.text_field or None, "id_field": args.id_field}
    if args.format:
        overrides["format"] = args.format
    job = TaggingJob(
        model_path=args.model,
        input_patterns=tuple(args.input or ()),
        output_dir=args.output,
        with_scores=args.scores,
        overwrite=args.overwrite,
        data_overrides=tuple(overrides.items()),
    )
    if not job.input_patterns:
        raise SystemExit("doctags predict: --output needs --input GLOB (repeatable)")
    started = time.time()
    summary = run_tagging(job, args.beam_args)
    dead = summary["dead_letter"]
    print(
        f"predict: {summary['records_read']} records read in {time.time() - started:.1f}s, "
        f"{summary['rows_written']} tagged, dead-letter {dead['total']} "
        f"{dead['by_reason'] or ''} -> {args.output}".replace("  ", " ")
    )
    if not summary["all_records_accounted_for"]:
        raise SystemExit("doctags predict: records read != rows written + dead letters")
    return summary["rows_written"]


def _serve_batching(args):
    """Batching options from the flags, then TF Serving's batching parameters file."""
    from serving.batching import BatchingOptions

    batching = BatchingOptions(
        max_batch_size=args.max_batch_size,
        batch_timeout_micros=args.batch_timeout_micros,
        max_enqueued_batches=args.max_enqueued_batches,
        num_batch_threads=args.num_batch_threads,
        enable_large_batch_splitting=args.enable_large_batch_splitting,
        max_execution_batch_size=args.max_execution_batch_size,
        enabled=not args.disable_batching,
    )
    if args.batching_parameters_file:
        from serving.batching_config import parse_batching_parameters

        with open(args.batching_parameters_file, encoding="utf-8") as f:
            batching = parse_batching_parameters(f.read(), batching)
    return batching


def _serve_metrics_path(args) -> str | None:
    """The Prometheus path a TF Serving monitoring config file turns on, if any."""
    if not args.monitoring_config_file:
        return None
    from serving.monitoring_config import prometheus_path

    with open(args.monitoring_config_file, encoding="utf-8") as f:
        return prometheus_path(f.read())


def cmd_serve(args) -> None:
    """Serves a model base path over TF Serving's REST and gRPC APIs until stopped."""
    from serving.http_server import HttpLimits
    from serving.server import ServerOptions, serve_forever

    try:
        options = ServerOptions(
            model_base_path=args.model_base_path,
            model_name=args.model_name,
            host=args.host,
            rest_port=None if args.rest_port < 0 else args.rest_port,
            grpc_port=None if args.grpc_port < 0 else args.grpc_port,
            batching=_serve_batching(args),
            max_request_bytes=args.max_request_bytes,
            poll_seconds=args.file_system_poll_wait_seconds,
            max_num_load_retries=args.max_num_load_retries,
            load_retry_interval=args.load_retry_interval_micros / 1e6,
            http=HttpLimits(
                max_connections=args.max_connections,
                max_workers=args.rest_api_num_threads,
                header_timeout=args.header_timeout_seconds,
                body_timeout=args.body_timeout_seconds,
                idle_timeout=args.idle_timeout_seconds,
            ),
            grpc_workers=args.grpc_max_threads,
            metrics_path=_serve_metrics_path(args),
        )
    except ValueError as e:
        raise SystemExit(f"doctags serve: error: {e}") from None
    serve_forever(options)


def _shown(path: str) -> str:
    """A path as a person would type it here: relative under the current directory."""
    relative = os.path.relpath(path)
    return shlex.quote(path if relative.startswith("..") else relative)


def _command(name: str) -> str:
    """How to call a console script of this environment: its name if PATH finds it."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.exists(path) or shutil.which(name) == path:
        return name
    return _shown(path)


def where_everything_is(cfg: Config, export_path: str, split: str = "test") -> str:
    """The closing lines of `doctags run`: every artifact's place and the next commands."""
    from trainer.outputs import CANDIDATES_DIR, LOGS_DIR, MODEL_FILE

    base_path = os.path.dirname(export_path)
    if cfg.model.family == "auto":  # one model (or ensemble) chosen among candidates
        model = (cfg.model_dir, "selection.json, thresholds.json, candidates/")
        logs = os.path.join(cfg.model_dir, CANDIDATES_DIR)  # one run per candidate
    else:
        model = (os.path.join(cfg.model_dir, MODEL_FILE), "with thresholds.json, history.csv")
        logs = os.path.join(cfg.model_dir, LOGS_DIR)
    places = [
        ("data", cfg.data_dir, "TFRecords, vocabularies, metadata.json, dead_letter/"),
        ("model", *model),
        ("TensorBoard", logs, ""),
        ("export", export_path, "SavedModel for TF Serving"),
        ("metrics", os.path.join(cfg.eval_dir, f"metrics_{split}.json"), ""),
        ("report", os.path.join(cfg.eval_dir, f"report_{split}.html"), "open in a browser"),
    ]
    doctags = _command("doctags")
    lines = ["where everything is:"]
    lines += [
        f"  {what:<12} {_shown(path)}" + (f"  ({note})" if note else "")
        for what, path, note in places
    ]
    lines += [
        "next:",
        f"  {doctags} predict --model {_shown(base_path)} 'text to tag'",
        f"  {doctags} predict --model {_shown(base_path)} --input texts.txt   (one text a line)",
        f"  {doctags} predict --model {_shown(base_path)} --input 'corpus/*.jsonl' "
        "--output tagged/   (a corpus, as a Beam job)",
        f"  {doctags} serve --model-base-path {_shown(base_path)} --model-name "
        f"{shlex.quote(cfg.export.model_name)}   (TF Serving's REST :8501 and gRPC :8500)",
        f"  {_command('tensorboard')} --logdir {_shown(logs)}",
    ]
    return "\n".join(lines)


def check_export_target(cfg: Config, overwrite: bool) -> None:
    """The one rule for an existing export version, applied before any work.

    Raises:
        FileExistsError: when the version exists and ``overwrite`` is False;
            the message names ``--overwrite`` and the next free version.
    """
    from doctags_core.version_publish import conflict_message

    message = conflict_message(cfg.export_dir)
    if message and not overwrite:
        raise FileExistsError(message)


def cmd_run(cfg: Config, args) -> dict:
    """Preprocess -> train -> export -> evaluate -> a few predictions -> where things are."""
    from doctags_core.data_files import read_split
    from doctags_core.tagger import Tagger

    started = time.time()
    cmd_preprocess(cfg, args)
    cmd_train(cfg, args)
    path = cmd_export(cfg, args)
    args.model, args.split = path, "test"
    report = cmd_evaluate(cfg, args)
    _, texts, labels = read_split(cfg.data_dir, "test")
    sample = texts[:5]
    print("\nsample predictions (test split; true labels in brackets):")
    for text, tags, truth in zip(sample, Tagger(path).predict(sample), labels):
        print(format_predictions([text], [tags]) + f"   [{', '.join(truth)}]")
    m = report["metrics"]
    print(
        f"\ndone in {time.time() - started:.0f}s: test micro-F1 {m['micro_f1']:.4f}, "
        f"macro-F1 {m['macro_f1']:.4f}, samples-F1 {m['samples_f1']:.4f}\n"
    )
    print(where_everything_is(cfg, path, args.split))
    return report


def format_init(result) -> str:
    """What `doctags init` found, in a few lines, and what to run next."""
    p, sample = result.proposal, result.sample
    label = p.label
    form = (
        f'names separated by "{label.delimiter}"'
        if label.form == "delimited"
        else {"list": "lists", "json_list": "JSON lists", "single": "one name each"}[label.form]
    )
    split = "none (the id hash splits)"
    if p.split:
        split = (
            p.split.field
            + ": "
            + ", ".join(
                f"{v}" + (f" -> {m}" if m and m != v else "") for v, m in p.split.meaning.items()
            )
        )
    read = f"{'all' if sample.complete else 'the first'} {sample.scanned} records"
    if len(sample.rows) < sample.scanned:
        read += f", looked at a uniform sample of {len(sample.rows)}"
    return "\n".join(
        [
            f"init: {sample.path} ({sample.format}): read {read}",
            f"  text_fields   [{', '.join(p.text_fields)}]",
            f"  label_field   {label.field}: {form}, {len(label.counts)} labels in the sample",
            f"  id_field      {p.id_field or 'null (a SHA-1 of the text)'}",
            f"  split_field   {split}",
            f"wrote {result.path} (its comments say why, and the alternatives); check it, then:",
            f"  {_command('doctags')} run --config {_shown(result.path)}",
        ]
    )


def cmd_init(args) -> None:
    """Writes a commented config for the data at ``--input``."""
    from doctags_core.init_config import experiment_name, write_init_config

    out = args.out or f"{experiment_name(args.input)}.yaml"
    result = write_init_config(args.input, out, force=args.force, sample_size=args.sample)
    print(format_init(result))


def cmd_config(args) -> None:
    """Prints the config reference (all keys, a section or one key), or its Markdown page."""
    from doctags_core.config_reference import explain, markdown

    if args.markdown:
        print(markdown(), end="")
    else:
        print(explain(args.explain or None), end="")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="doctags", description=__doc__.split("\n")[0])
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging, with the libraries' logs (Beam, TensorFlow, absl, CUDA probing)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", required=True, help="experiment YAML")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config value, e.g. training.epochs=2",
        )
        return p

    strict_help = "treat data-report warnings as errors (the dataset is then not published)"
    p = with_config("preprocess", "Beam job: raw documents -> TFRecords + vocabularies")
    p.add_argument("--strict", action="store_true", help=strict_help)
    with_config("train", "train under MirroredStrategy and pick the threshold")
    p = with_config("export", "write the raw-string SavedModel")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p = with_config("evaluate", "metrics of the exported model on a split")
    p.add_argument("--model", help="SavedModel (default: the config's export)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p = with_config("run", "preprocess, train, export and evaluate")
    p.add_argument("--strict", action="store_true", help=strict_help)
    p.add_argument("--overwrite", action="store_true", help="replace an existing export version")
    p = sub.add_parser("predict", help="tag raw texts with an exported model or a server")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="SavedModel version dir or base path")
    where.add_argument(
        "--server", help="TF Serving / doctags serve URL: http://host:8501 or grpc://host:8500"
    )
    p.add_argument("--model-name", help="served model name (with --server)")
    p.add_argument("--model-version", type=int, help="pin a served version (with --server)")
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument(
        "--input",
        action="append",
        help="a file with one text per line ('-' for stdin); with --output, corpus glob(s) "
        "(JSONL, CSV, Parquet, TFRecord; repeatable)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--output", help="tag a corpus with a Beam job: JSONL shards go here")
    p.add_argument("--scores", action="store_true", help="with --output: every label's score")
    p.add_argument("--overwrite", action="store_true", help="with --output: replace its files")
    p.add_argument(
        "--text-field", action="append", help="with --output: text field(s), else the model's"
    )
    p.add_argument("--id-field", help="with --output: id field, else the model's")
    p.add_argument("--format", help="with --output: jsonl, csv, parquet or tfrecord (else auto)")
    p = sub.add_parser("serve", help="serve a model base path over TF Serving's REST and gRPC APIs")
    p.add_argument("--model-base-path", required=True, help="directory of numbered versions")
    p.add_argument("--model-name", help="name in URLs (default: the base path's last part)")
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default loopback; others warn)"
    )
    p.add_argument("--rest-port", type=int, default=8501, help="0: any free port, -1: off")
    p.add_argument("--grpc-port", type=int, default=8500, help="0: any free port, -1: off")
    p.add_argument(
        "--max-batch-size", type=int, default=1024, help="largest request; larger ones get 400"
    )
    p.add_argument(
        "--enable-large-batch-splitting",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cut requests into model calls of --max-execution-batch-size rows",
    )
    p.add_argument("--max-execution-batch-size", type=int, default=64)
    p.add_argument("--batch-timeout-micros", type=int, default=0)
    p.add_argument("--max-enqueued-batches", type=int, default=100)
    p.add_argument("--num-batch-threads", type=int, default=2)
    p.add_argument("--disable-batching", action="store_true")
    p.add_argument("--batching-parameters-file", help="TF Serving batching parameters (text proto)")
    p.add_argument("--max-request-bytes", type=int, default=8 << 20)
    p.add_argument("--file-system-poll-wait-seconds", type=float, default=1.0)
    p.add_argument(
        "--max-num-load-retries", type=int, default=5, help="TF Serving's: attempts after the first"
    )
    p.add_argument(
        "--load-retry-interval-micros",
        type=int,
        default=60_000_000,
        help="TF Serving's: wait between load attempts",
    )
    p.add_argument(
        "--monitoring-config-file", help="TF Serving MonitoringConfig (Prometheus endpoint)"
    )
    p.add_argument("--rest-api-num-threads", type=int, default=32, help="REST handler threads")
    p.add_argument("--grpc-max-threads", type=int, default=32, help="gRPC handler threads")
    p.add_argument("--max-connections", type=int, default=1024, help="open REST connections")
    p.add_argument("--header-timeout-seconds", type=float, default=10.0)
    p.add_argument("--body-timeout-seconds", type=float, default=60.0)
    p.add_argument("--idle-timeout-seconds", type=float, default=120.0)
    add_synth_arguments(sub.add_parser("synth", help="generate a synthetic labelled corpus"))
    p = sub.add_parser("init", help="write a commented config for your own data")
    p.add_argument("--input", required=True, help="a JSONL, CSV or Parquet file (gzip or not)")
    p.add_argument("--out", help="config file to write (default: NAME.yaml here)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--sample", type=int, default=2000, help="records to look at")
    p = sub.add_parser("config", help="explain the config keys, their defaults and meaning")
    p.add_argument(
        "--explain",
        nargs="?",
        const="",
        default="",
        metavar="KEY",
        help="one key (data.label_field) or section (data); all without KEY",
    )
    p.add_argument("--markdown", action="store_true", help="the docs/config.md page")
    return parser


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per `SynthSpec` field (``--mean-words`` for ``mean_words``), plus output."""
    from doctags_core.synth import FORMATS, SynthSpec

    parser.add_argument("--out", required=True, help="output directory")
    for f in dataclasses.fields(SynthSpec):
        parser.add_argument(
            "--" + f.name.replace("_", "-"), type=type(f.default), default=f.default
        )
    parser.add_argument("--format", choices=FORMATS, default="jsonl")
    parser.add_argument("--workers", type=int, default=1, help="generator processes")


def cmd_synth(args) -> list[str]:
    """Writes a synthetic corpus (`doctags_core.synth`) and prints where."""
    from doctags_core.synth import SynthSpec, write_corpus

    started = time.time()
    spec = SynthSpec(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SynthSpec)})
    paths = write_corpus(spec, args.out, args.format, workers=args.workers)
    print(
        f"synth: {spec.documents} documents, {spec.labels} labels in {len(paths)} "
        f"{args.format} shard(s) in {time.time() - started:.1f}s -> {args.out}"
    )
    return paths


COMMANDS = {
    "preprocess": cmd_preprocess,
    "train": cmd_train,
    "export": cmd_export,
    "evaluate": cmd_evaluate,
    "run": cmd_run,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``doctags`` console script.

    Args:
        argv: The arguments; None reads the command line, and then (a real
            process of its own, not a caller's) native library logs are
            filtered from stderr too unless ``-v`` (`console.NativeLogFilter`).
    """
    own_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    beam_args: list[str] = []
    if "--" in argv:  # everything after -- goes to Beam untouched
        cut = argv.index("--")
        argv, beam_args = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    args.beam_args = beam_args
    args.terminal = console.stderr_is_terminal()
    console.set_native_log_level(args.verbose)
    console.configure_logging(args.verbose)
    native = console.NativeLogFilter() if own_process and not args.verbose else None
    if own_process and args.command == "preprocess":
        from doctags_core.tf_runtime import dedicate_process_to_preprocessing

        dedicate_process_to_preprocessing()  # nothing but the Beam job runs TF here
    try:
        return _run_command(args)
    finally:
        if native is not None:
            native.close()


def _run_command(args) -> int:
    try:
        if args.command == "predict":
            cmd_predict(args)
        elif args.command == "serve":
            cmd_serve(args)
        elif args.command == "synth":
            cmd_synth(args)
        elif args.command == "init":
            cmd_init(args)
        elif args.command == "config":
            cmd_config(args)
        else:
            cfg = _config(args)
            COMMANDS[args.command](cfg, args)
    except (
        ConfigError,
        DataError,
        SampleError,
        DetectionError,
        FileNotFoundError,
        FileExistsError,
    ) as e:
        print(f"doctags {args.command}: error: {e}", file=sys.stderr)
        return 2
    except DataRejected as e:
        print(f"doctags {args.command}: {e}", file=sys.stderr)
        return 3
    except ServingError as e:
        print(f"doctags {args.command}: server error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
