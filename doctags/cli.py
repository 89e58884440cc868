"""The ``doctags`` command line: thin parsing over the stages' library functions.

doctags preprocess --config C [--set KEY=VALUE ...] [-- BEAM_OPTIONS ...]
doctags train      --config C
doctags export     --config C [--overwrite]
doctags evaluate   --config C [--model DIR] [--split test]
doctags predict    --model DIR (TEXT ... | --input FILE)
doctags run        --config C     (all of the above, in order)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import yaml  # noqa: E402

from doctags_core.config import Config, ConfigError, load_config  # noqa: E402

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
    if args.command in ("train", "run"):
        # Logical devices must be set before any TensorFlow op runs.
        from trainer.distribute import configure_logical_cpus

        configure_logical_cpus(cfg.training.logical_cpu_devices)
    return cfg


def cmd_preprocess(cfg: Config, args) -> dict:
    """Runs the Beam job and prints its summary."""
    from beam_preprocess.pipeline import run_preprocess

    started = time.time()
    metadata = run_preprocess(cfg, args.beam_args)
    docs, dead = metadata["documents"], metadata["dead_letter"]
    print(
        f"preprocess: {metadata['records_read']} records read in {time.time() - started:.1f}s: "
        f"train {docs['train']}, validation {docs['validation']}, test {docs['test']}; "
        f"dead-letter {dead['total']} {dead['by_reason'] or ''}".rstrip()
    )
    print(
        f"  vocabulary {metadata['vocabulary_size']} tokens, "
        f"{metadata['label_vocabulary_size']} labels -> {cfg.data_dir}"
    )
    return metadata


def cmd_train(cfg: Config, args):
    """Trains and prints the validation result."""
    from trainer.train import train

    result = train(cfg)
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
    from serving.evaluate import evaluate, format_report

    report = evaluate(args.model or cfg.export_dir, cfg.data_dir, cfg.eval_dir, args.split)
    print(format_report(report))
    print(f"report: {os.path.join(cfg.eval_dir, f'metrics_{args.split}.json')}")
    return report


def _read_inputs(path: str) -> list[str]:
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        lines = [line.rstrip("\n") for line in stream]
    return [line for line in lines if line.strip()]


def format_predictions(texts: list[str], predictions, width: int = 70) -> str:
    """One block per text: a shortened text line, then its tags with scores."""
    out = []
    for text, tags in zip(texts, predictions):
        short = " ".join(text.split())
        short = short if len(short) <= width else short[: width - 3] + "..."
        shown = ", ".join(f"{t} ({s:.2f})" for t, s in tags) or "(no tag above threshold)"
        out.append(f"{short}\n  -> {shown}")
    return "\n".join(out)


def cmd_predict(args) -> list:
    """Tags texts given on the command line or in a file (one per line)."""
    from serving.model import Tagger

    texts = list(args.texts) + (_read_inputs(args.input) if args.input else [])
    if not texts:
        raise SystemExit("doctags predict: give TEXT arguments or --input FILE")
    predictions = Tagger(args.model).predict(texts)
    if args.json:
        for text, tags in zip(texts, predictions):
            print(json.dumps({"text": text, "tags": [{"tag": t, "score": s} for t, s in tags]}))
    else:
        print(format_predictions(texts, predictions))
    return predictions


def cmd_run(cfg: Config, args) -> dict:
    """Preprocess -> train -> export -> evaluate -> a few predictions."""
    from serving.evaluate import read_split
    from serving.model import Tagger

    started = time.time()
    cmd_preprocess(cfg, args)
    cmd_train(cfg, args)
    args.overwrite = True  # a re-run of the whole experiment replaces its own export
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
        f"macro-F1 {m['macro_f1']:.4f}, samples-F1 {m['samples_f1']:.4f}"
    )
    return report


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="doctags", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
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

    with_config("preprocess", "Beam job: raw documents -> TFRecords + vocabularies")
    with_config("train", "train under MirroredStrategy and pick the threshold")
    p = with_config("export", "write the raw-string SavedModel")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p = with_config("evaluate", "metrics of the exported model on a split")
    p.add_argument("--model", help="SavedModel (default: the config's export)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p = with_config("run", "preprocess, train, export and evaluate")
    p = sub.add_parser("predict", help="tag raw texts with an exported model")
    p.add_argument("--model", required=True, help="SavedModel version dir or base path")
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--input", help="file with one text per line ('-' for stdin)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


COMMANDS = {
    "preprocess": cmd_preprocess,
    "train": cmd_train,
    "export": cmd_export,
    "evaluate": cmd_evaluate,
    "run": cmd_run,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``doctags`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    beam_args: list[str] = []
    if "--" in argv:  # everything after -- goes to Beam untouched
        cut = argv.index("--")
        argv, beam_args = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    args.beam_args = beam_args
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "predict":
            cmd_predict(args)
        else:
            cfg = _config(args)
            COMMANDS[args.command](cfg, args)
    except (ConfigError, FileNotFoundError, FileExistsError) as e:
        print(f"doctags {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
