"""Rebuilds ``serving/tf_serving_2_20_ops.txt``: the ops a TF Serving 2.20 server can run.

TF Serving cannot be installed here, so the list is derived from what TF
Serving 2.20.0 links, reproduced with the same releases from PyPI:

- Core ops: TF Serving 2.20.0 pins TensorFlow at the 2.20 release and links
  its core kernels. The op registry of the ``tensorflow-cpu==2.20.0`` wheel
  is read (``TF_GetAllOpList``) and an op is kept only if it has a CPU kernel
  registered (this drops TPU/GPU-only ops and the test-only ops the wheel
  registers, such as ``Foo2``). Ops whose CPU kernel lives in the Python
  runtime (``PyFunc`` and friends) are removed: a C++ server has no Python.
  XLA-cluster ops are removed too: whether a given model server build can
  run ``jit_compile`` functions is not something we can verify here, so a
  graph that needs them is rejected (conservative).
  Because the registry is the 2.20 wheel's, ops added in TF 2.21 (the
  version doctags trains with) are absent, and the test catches them.
- tensorflow-text ops: TF Serving 2.20.0's ``SUPPORTED_TENSORFLOW_OPS``
  (tensorflow_serving/model_servers/BUILD) links
  ``@org_tensorflow_text//tensorflow_text:ops_lib`` from text v2.20.0
  (tensorflow_serving/workspace.bzl). That target's deps are the
  ``<name>_cc`` libraries listed in `TFTEXT_OPS_LIB` below (copied from
  tensorflow_text/BUILD at v2.20.0); each ``<name>_cc`` is built into
  ``<name>.so`` by ``py_tf_text_library``, so loading those shared objects
  from the ``tensorflow-text==2.20.0`` wheel lists exactly the ops linked.
- TensorFlow Decision Forests inference ops, also linked by TF Serving, are
  left out: doctags never uses them, and a shorter list only makes the
  check stricter.

Run it with a Python that has ``tensorflow-cpu==2.20.0`` and
``tensorflow-text==2.20.0`` (installed ``--no-deps``) and nothing else::

    python3 -m venv /tmp/tf220 && /tmp/tf220/bin/pip install tensorflow-cpu==2.20.0
    /tmp/tf220/bin/pip install --no-deps tensorflow-text==2.20.0
    /tmp/tf220/bin/python serving/opset_build.py --out serving/tf_serving_2_20_ops.txt
"""

from __future__ import annotations

import argparse
import glob
import os

# tensorflow_text/BUILD @ v2.20.0, target "ops_lib": deps ":<name>_cc".
TFTEXT_OPS_LIB = (
    "boise_offset_converter",
    "byte_splitter",
    "constrained_sequence_op",
    "fast_bert_normalizer",
    "fast_sentencepiece_tokenizer",
    "fast_wordpiece_tokenizer",
    "mst_ops",
    "ngrams_op",
    "normalize_ops",
    "phrase_tokenizer",
    "regex_split_ops",
    "sentence_breaking_ops",
    "sentencepiece_tokenizer",
    "split_merge_from_logits_tokenizer",
    "split_merge_tokenizer",
    "state_based_sentence_breaker_op",
    "text_similarity_metric_ops",
    "trimmer_ops",
    "unicode_script_tokenizer",
    "utf8_binarize_op",
    "whitespace_tokenizer",
    "whitespace_tokenizer_v2",
    "wordpiece_tokenizer",
)

# CPU kernels registered by tensorflow/python (py_func.cc), absent from a C++ server.
PYTHON_RUNTIME_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc")
# Ops that only exist inside XLA-compiled clusters (see the module docstring).
XLA_PREFIXES = ("Xla", "_Xla")

EXPECTED_TF = "2.20.0"
EXPECTED_TFTEXT = "2.20.0"


def _registered_ops() -> list[str]:
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session

    buffer = pywrap_tf_session.TF_GetAllOpList()
    return [
        op.name for op in op_def_pb2.OpList.FromString(pywrap_tf_session.TF_GetBuffer(buffer)).op
    ]


def _has_cpu_kernel(name: str) -> bool:
    from tensorflow.python.framework import kernels

    found = kernels.get_registered_kernels_for_op(name).kernel
    return any(k.device_type in ("CPU", "DEFAULT") for k in found)


def core_ops() -> tuple[list[str], dict[str, int]]:
    """Core ops with a CPU kernel, minus Python-runtime and XLA ops; plus counts."""
    registered = _registered_ops()
    with_kernel = [n for n in registered if _has_cpu_kernel(n)]
    kept = [
        n
        for n in with_kernel
        if n not in PYTHON_RUNTIME_OPS and not n.startswith(XLA_PREFIXES) and n != "XlaLaunch"
    ]
    counts = {
        "registered": len(registered),
        "with_cpu_kernel": len(with_kernel),
        "kept": len(kept),
    }
    return sorted(kept), counts


def tftext_ops() -> list[str]:
    """Ops registered by the tensorflow-text shared objects that ``ops_lib`` links."""
    import importlib.util

    import tensorflow as tf

    # Located, not imported: importing tensorflow_text would load every library.
    root = os.path.dirname(importlib.util.find_spec("tensorflow_text").origin)
    names = set()
    for lib in TFTEXT_OPS_LIB:
        found = glob.glob(os.path.join(root, "**", f"_{lib}.so"), recursive=True)
        if len(found) != 1:
            raise FileNotFoundError(f"tensorflow-text: expected one _{lib}.so, found {found}")
        before = set(_registered_ops())
        tf.load_op_library(found[0])
        added = set(_registered_ops()) - before
        if not added and not names:
            raise RuntimeError(f"{found[0]} registered no op")
        names |= added
    return sorted(names)


def main() -> None:
    """Writes the allowlist; refuses to run on other TensorFlow versions."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import tensorflow as tf

    if tf.__version__ != EXPECTED_TF:
        raise SystemExit(f"needs tensorflow {EXPECTED_TF}, this Python has {tf.__version__}")
    core, counts = core_ops()  # before tensorflow_text registers anything
    from importlib.metadata import version

    if version("tensorflow-text") != EXPECTED_TFTEXT:
        raise SystemExit(f"needs tensorflow-text {EXPECTED_TFTEXT}")
    text_ops = tftext_ops()
    header = [
        "# Ops a TF Serving 2.20.0 model server can run (CPU). Generated by",
        "# serving/opset_build.py (read its docstring for the method); do not edit.",
        f"# core: tensorflow-cpu=={tf.__version__} op registry: {counts['registered']} ops, "
        f"{counts['with_cpu_kernel']} with a CPU kernel, {counts['kept']} kept",
        f"#   (removed: {', '.join(PYTHON_RUNTIME_OPS)}, Xla*/_Xla* ops)",
        f"# text: tensorflow-text=={EXPECTED_TFTEXT} ops_lib ({len(TFTEXT_OPS_LIB)} libraries): "
        f"{len(text_ops)} ops",
    ]
    lines = header + ["[core]"] + core + ["[tensorflow-text]"] + text_ops
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{args.out}: {len(core)} core ops, {len(text_ops)} tensorflow-text ops")


if __name__ == "__main__":
    main()
