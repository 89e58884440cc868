"""Generates a synthetic labelled corpus for the benchmarks: `doctags synth` itself.

    python bench/make_corpus.py --out /tmp/doctags-scale/corpus-1000000 --documents 1000000

Sharded JSONL.gz by default (``--format csv|parquet|tfrecord`` for the other
inputs the Beam job reads), deterministic from ``--seed``; every field of
`doctags_core.synth.SynthSpec` is an option (``--mean-words``,
``--label-exponent``, ...).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from doctags.cli import main

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]]))
