"""Generates a synthetic labelled corpus for the scale benchmarks (same as `doctags synth`).

    python bench/make_corpus.py --out /tmp/doctags-scale/corpus-1000000 --documents 1000000

Sharded JSONL.gz by default (``--format csv|parquet|tfrecord`` for the other
inputs the Beam job reads), deterministic from ``--seed``; see
`doctags_core.synth` for the shape of the text and labels.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from doctags_core import synth  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    synth.add_arguments(parser)
    args = parser.parse_args(argv)
    spec = synth.spec_from_args(args)
    started = time.perf_counter()
    paths = synth.write_corpus(spec, args.out, args.format, workers=args.workers)
    seconds = time.perf_counter() - started
    print(
        f"{spec.documents:,} documents, {spec.labels} labels, {len(paths)} {args.format} "
        f"shard(s) in {seconds:.1f}s ({spec.documents / seconds:,.0f} documents/s) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
