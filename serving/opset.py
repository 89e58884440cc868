"""Which ops a SavedModel needs, and which of them the targeted TF Serving lacks.

TF Serving refuses to load a SavedModel that uses an op its binary was not
built with ("Op type not registered"), and only at deploy time. Checking the
op set here, against the list `opset_build` derived from TF Serving 2.20's
own dependencies, moves that failure into the test suite. The release is
`doctags_core.export_contract.TF_SERVING_VERSION`; its list is
``tf_serving_<major>_<minor>_ops.txt`` next to this module.
"""

from __future__ import annotations

import os

from doctags_core.export_contract import tf_serving_minor

ALLOWLIST = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    f"tf_serving_{tf_serving_minor().replace('.', '_')}_ops.txt",
)


def saved_model_ops(saved_model_dir: str) -> set[str]:
    """Every op type in the SavedModel: graph nodes and function-library bodies.

    Calls to functions of the library appear as nodes whose "op" is the
    function's name; those are not ops and are left out (their bodies are
    listed instead).
    """
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    ops: set[str] = set()
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        functions = {fn.signature.name for fn in graph.library.function}
        ops |= {node.op for node in graph.node}
        for fn in graph.library.function:
            ops |= {node.op for node in fn.node_def}
        ops -= functions
    return ops


def load_allowlist(path: str = ALLOWLIST) -> dict[str, set[str]]:
    """``{"core": ops, "tensorflow-text": ops}`` from the generated list."""
    sections: dict[str, set[str]] = {}
    current = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], set())
            elif current is None:
                raise ValueError(f"{path}: op {line!r} before any [section]")
            else:
                current.add(line)
    return sections


def unsupported_ops(saved_model_dir: str) -> list[str]:
    """Ops of the SavedModel that the targeted TF Serving model server cannot run."""
    allowed = set().union(*load_allowlist().values())
    return sorted(saved_model_ops(saved_model_dir) - allowed)
