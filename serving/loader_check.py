"""Does an export run in TF Serving's loader, and agree with Python's?

    python -m serving.loader_check EXPORT_VERSION_DIR [...]

For each version directory: load it with the session-based loader that
TF Serving, ``saved_model_cli run`` and TensorFlow's C API use
(`doctags_core.session_model`), run ``serving_default`` and ``tokenize`` on
probe texts, replay every record of ``assets.extra/tf_serving_warmup_requests``
through that session, and compare every output with the object-graph loader
(``tf.saved_model.load``): scores within 1e-6, tags and token ids equal.
One line per export; exit 1 if any fails.

Imports TensorFlow and the core's contract only, so `.ci/run` runs it under
the TensorFlow release TF Serving links (`export_contract.TF_SERVING_VERSION`),
in a small environment without the rest of doctags' dependencies.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from doctags_core import export_contract as contract
from doctags_core.session_model import SessionModel, register_text_ops_if_needed

SCORE_TOLERANCE = 1e-6
PROBE_TEXTS = (
    "Crude oil prices rose sharply in OPEC talks",
    "Net profit 5 mln dlrs vs 3 mln, shr 30 cts &amp; <b>dividend</b> up",
    "Wheat and corn exports didn't fall; see www.example.com",
    "",
    "Ünïcödé Müller said prices weren't firm",
)


def _object_signatures(path: str) -> dict:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:
        if not register_text_ops_if_needed(e):
            raise
        loaded = tf.saved_model.load(path)
    return {"loaded": loaded, **loaded.signatures}


def _compare(signature: str, session_out: dict, object_out: dict) -> float:
    """Raises AssertionError on a mismatch; returns the largest float difference."""
    if sorted(session_out) != sorted(object_out):
        raise AssertionError(f"{signature}: outputs {sorted(session_out)} != {sorted(object_out)}")
    worst = 0.0
    for name, value in session_out.items():
        expected = np.asarray(object_out[name])
        if value.shape != expected.shape:
            raise AssertionError(f"{signature}.{name}: shape {value.shape} != {expected.shape}")
        if value.dtype.kind == "f":
            diff = float(np.max(np.abs(value - expected))) if value.size else 0.0
            if diff > SCORE_TOLERANCE:
                raise AssertionError(f"{signature}.{name}: differs by {diff:g}")
            worst = max(worst, diff)
        elif not np.array_equal(value, expected):
            raise AssertionError(f"{signature}.{name}: {value!r} != {expected!r}")
    return worst


def check_export(path: str) -> dict:
    """Runs the whole check on one version directory.

    Returns:
        ``{"path", "tensorflow", "labels", "signatures", "warmup_replayed",
        "max_abs_diff", "tagged"}``; ``tagged`` counts probe and warmup texts
        that got at least one tag (so a comparison of empty outputs shows).

    Raises:
        AssertionError: on any difference between the two loaders.
        Exception: whatever the session loader raises for an export it cannot run.
    """
    import tensorflow as tf

    objects = _object_signatures(path)
    worst, tagged, replayed = 0.0, 0, 0
    with SessionModel(path) as session:
        missing = {contract.SIGNATURE, contract.TOKENIZE_SIGNATURE} - set(session.signature_defs)
        if missing:
            raise AssertionError(f"signatures missing in the session loader: {sorted(missing)}")
        probes = [
            (name, {contract.INPUT_NAME: np.array(PROBE_TEXTS, dtype=object)})
            for name in (contract.SIGNATURE, contract.TOKENIZE_SIGNATURE)
        ]
        warmup = list(session.warmup_requests())
        if not warmup:
            raise AssertionError(f"{contract.warmup_path(path)}: no warmup request")
        for signature, inputs in probes + warmup:
            session_out = session.run(signature, inputs)
            tensors = {k: tf.constant(v) for k, v in inputs.items()}
            object_out = {k: v.numpy() for k, v in objects[signature](**tensors).items()}
            worst = max(worst, _compare(signature, session_out, object_out))
            if signature == contract.SIGNATURE:
                tagged += int(np.sum(np.any(session_out["tags"] != b"", axis=1)))
        replayed = session.replay_warmup()
    return {
        "path": path,
        "tensorflow": tf.__version__,
        "labels": len(contract.read_labels(path)),
        "signatures": sorted(s for s in session.signature_defs if not s.startswith("__")),
        "warmup_replayed": replayed,
        "max_abs_diff": worst,
        "tagged": tagged,
    }


def main(argv: list[str] | None = None) -> int:
    """Checks each export given; one line each; 1 if any fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("exports", nargs="+", help="SavedModel version directories")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.exports:
        try:
            r = check_export(path)
        except Exception as e:  # noqa: BLE001 - reported per export, then the exit code says it
            failed += 1
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            print(f"FAIL {path}: {type(e).__name__}: {first}", flush=True)
            continue
        print(
            f"ok   {path}: TF {r['tensorflow']} session loader, signatures "
            f"{','.join(r['signatures'])}, {r['warmup_replayed']} warmup requests replayed, "
            f"{r['labels']} labels, {r['tagged']} tagged texts, max |diff| {r['max_abs_diff']:.1e}",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
