"""The synthetic corpora of the issue-11 research (doctags_core.synth, fixed seeds).

    python bench/research/make_synth.py --out /tmp/q/corpora [--only NAME]

`doctags synth` does not expose ``label_exponent``; these presets need it.
Each preset is one corpus shape the research covers; all are hard enough that
the baselines stay well below 1.0 (low ``topic_share``: few label words).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from doctags_core.synth import SynthSpec, write_corpus

PRESETS = {
    # Many labels, short texts, heavy Zipf tail (like the users' held-out corpus).
    "synth500short": SynthSpec(
        documents=30_000,
        labels=500,
        mean_words=40,
        mean_labels=2.0,
        label_exponent=1.1,
        topic_share=0.15,
        title_words=0,
        seed=11,
    ),
    # Few labels, long texts, steep imbalance (the 20th label ~1/90 of the 1st).
    "synth20long": SynthSpec(
        documents=10_000,
        labels=20,
        mean_words=400,
        mean_labels=1.5,
        label_exponent=1.5,
        topic_share=0.03,
        title_words=0,
        seed=12,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="one subdirectory per preset")
    parser.add_argument("--only", help="comma-separated preset names")
    args = parser.parse_args()
    for name in (args.only or ",".join(PRESETS)).split(","):
        paths = write_corpus(PRESETS[name], os.path.join(args.out, name), workers=1)
        print(name, paths)


if __name__ == "__main__":
    main()
