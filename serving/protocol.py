"""TF Serving's REST predict format: JSON request bodies to arrays, arrays to JSON.

The format is TF Serving's (https://www.tensorflow.org/tfx/serving/api_rest):

- row format: ``{"signature_name": S, "instances": [...]}``; each instance is
  the value of the only input, or an object ``{input_name: value}``; the
  answer is ``{"predictions": [...]}`` with one object per instance
  (``{output_name: value}``; a bare value when the signature has one output).
- columnar format: ``{"signature_name": S, "inputs": {name: batch}}`` (or the
  bare batch for a single input); the answer is ``{"outputs": {name: batch}}``.
- binary strings travel as ``{"b64": "..."}``; outputs whose name ends in
  ``_bytes`` are always sent that way, other strings as UTF-8 text.

Pure numpy and JSON: both the server and the client import this module, and
the client must not need TensorFlow.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np

from doctags_core.export_contract import SIGNATURE as DEFAULT_SIGNATURE  # TF Serving's too
from serving.errors import invalid

MAX_RANK = 32  # deeper JSON lists cannot be a tensor a signature takes (numpy stops at 64)


@dataclass(frozen=True)
class TensorInfo:
    """A signature input or output: TF dtype name and shape (None = any size)."""

    dtype: str
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class SignatureInfo:
    """Inputs and outputs of one signature, by name."""

    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


@dataclass(frozen=True)
class PredictCall:
    """A validated predict request."""

    signature_name: str
    inputs: dict[str, np.ndarray]
    row_format: bool
    output_filter: tuple[str, ...] = ()

    @property
    def batch_size(self) -> int:
        return len(next(iter(self.inputs.values())))


_NUMERIC = {
    "float16": np.float16,
    "half": np.float16,
    "float32": np.float32,
    "float64": np.float64,
    "double": np.float64,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
}


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _string_leaf(value, name: str) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as e:  # JSON's "\ud800" escapes decode to lone surrogates
            bad = f"{ord(value[e.start]):04x}"
            raise invalid(
                f"input '{name}': a JSON string holds a lone UTF-16 surrogate (\\u{bad}), "
                'which is not Unicode; send UTF-8 text or {"b64": ...} for bytes'
            ) from None
    if _is_b64(value) and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError as e:
            raise invalid(f"input '{name}': invalid base64 in {{\"b64\": ...}}: {e}") from None
    raise invalid(
        f"input '{name}' has dtype string; expected a string or {{\"b64\": ...}}, "
        f"got {type(value).__name__} {json.dumps(value)[:80]}"
    )


def _strings(value, name: str):
    if isinstance(value, list):
        return [_strings(v, name) for v in value]
    return _string_leaf(value, name)


def _shape_of(nested) -> tuple[int, ...]:
    """Shape of a nested list, or an error when the lists are ragged."""
    if not isinstance(nested, list):
        return ()
    inner = {_shape_of(v) for v in nested}
    if len(inner) > 1:
        raise ValueError("ragged")
    return (len(nested),) + (inner.pop() if inner else ())


def to_array(value, name: str, info: TensorInfo) -> np.ndarray:
    """A JSON value converted to the input's dtype, its shape checked.

    Raises:
        ServingError: INVALID_ARGUMENT naming the input, for wrong types,
            ragged lists, wrong ranks or sizes, and empty batches.
    """
    try:
        shape = _shape_of(value)
    except ValueError:
        raise invalid(
            f"input '{name}': lists of unequal lengths (ragged) are not a tensor"
        ) from None
    if len(shape) > MAX_RANK:
        raise invalid(f"input '{name}' has rank {len(shape)}; at most {MAX_RANK} is supported")
    if info.dtype == "string":
        flat = _strings(value, name)
        array = np.empty(shape, dtype=object)
        if len(shape) == 1:
            array[:] = flat  # bytes are not sequences to numpy: no splitting
        elif shape:
            array = _fill(flat, shape)
        else:
            array[()] = flat
    elif info.dtype == "bool":
        _check_leaves(value, name, (bool,), "true or false")
        array = np.asarray(value, dtype=bool)
    elif info.dtype in _NUMERIC:
        _check_leaves(value, name, (int, float), "a number")
        try:
            array = np.asarray(value, dtype=_NUMERIC[info.dtype])
        except (OverflowError, ValueError) as e:
            raise invalid(f"input '{name}': {e}") from None
    else:
        raise invalid(f"input '{name}': dtype {info.dtype} is not supported over JSON")
    check_shape(array.shape, name, info)
    return array


def _fill(flat, shape):
    """Nested lists of bytes into an object array without numpy splitting them."""
    out = np.empty(shape, dtype=object)
    for index in np.ndindex(*shape):
        item = flat
        for i in index:
            item = item[i]
        out[index] = item
    return out


def _check_leaves(value, name: str, types: tuple, expected: str) -> None:
    if isinstance(value, list):
        for v in value:
            _check_leaves(v, name, types, expected)
        return
    ok = isinstance(value, types) and (bool in types or not isinstance(value, bool))
    if not ok:
        raise invalid(
            f"input '{name}': expected {expected}, got {type(value).__name__} "
            f"{json.dumps(value)[:80]}"
        )


def check_shape(shape: tuple[int, ...], name: str, info: TensorInfo) -> None:
    """Checks a batch against the signature's shape; the batch must not be empty.

    Raises:
        ServingError: INVALID_ARGUMENT.
    """
    if not shape:
        raise invalid(f"input '{name}' must be a batch (a list), got a scalar")
    if info.shape is not None:
        if len(shape) != len(info.shape):
            raise invalid(
                f"input '{name}' must have rank {len(info.shape)} "
                f"(shape {_show(info.shape)}), got shape {list(shape)}"
            )
        for got, want in zip(shape[1:], info.shape[1:]):
            if want is not None and got != want:
                raise invalid(
                    f"input '{name}' must have shape {_show(info.shape)}, got {list(shape)}"
                )
    if shape[0] == 0:
        raise invalid(f"input '{name}' is an empty batch: send at least one instance")


def _show(shape) -> str:
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"


def _signature(signatures: dict[str, SignatureInfo], name) -> SignatureInfo:
    if not isinstance(name, str):
        raise invalid("'signature_name' must be a string")
    if name not in signatures:  # TF Serving's REST handler: INVALID_ARGUMENT (HTTP 400)
        raise invalid(
            f'Serving signature name: "{name}" not found in signature def; '
            f"known: {', '.join(sorted(signatures))}"
        )
    return signatures[name]


def _named(value, info: SignatureInfo, where: str) -> dict:
    """``{input_name: value}`` from an object with input names, or a bare value."""
    names = set(info.inputs)
    if isinstance(value, dict) and not _is_b64(value):
        unknown = sorted(set(value) - names)
        if unknown:
            raise invalid(
                f"{where}: input tensor alias not found in signature: {', '.join(unknown)}. "
                f"Inputs expected to be in the set {{{', '.join(sorted(names))}}}."
            )
        missing = sorted(names - set(value))
        if missing:
            raise invalid(f"{where}: missing input(s) {', '.join(missing)}")
        return value
    if len(names) != 1:
        raise invalid(
            f"{where}: the signature has inputs {{{', '.join(sorted(names))}}}; "
            "name each of them in an object"
        )
    return {next(iter(names)): value}


def parse_predict_request(body: bytes, signatures: dict[str, SignatureInfo]) -> PredictCall:
    """Validates a REST predict body against the model's signatures.

    Raises:
        ServingError: INVALID_ARGUMENT (HTTP 400) with a message naming what
            is wrong: malformed JSON (invalid UTF-8, lone surrogates, nesting
            deeper than Python's recursion limit), both or neither of
            ``instances`` and ``inputs``, unknown signature or input names,
            wrong value types, ragged or empty batches.
    """
    try:
        return _parse(body, signatures)
    except RecursionError:  # json and the converters recurse once per nesting level
        raise invalid("malformed JSON in request body: nested too deep") from None


def _parse(body: bytes, signatures: dict[str, SignatureInfo]) -> PredictCall:
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise invalid(f"malformed JSON in request body: {e}") from None
    if not isinstance(request, dict):
        raise invalid("the request body must be a JSON object with 'instances' or 'inputs'")
    unknown_keys = sorted(set(request) - {"signature_name", "instances", "inputs"})
    if unknown_keys:
        raise invalid(
            f"unknown key(s) {', '.join(unknown_keys)}; "
            "expected 'signature_name' and one of 'instances', 'inputs'"
        )
    name = request.get("signature_name", DEFAULT_SIGNATURE)
    info = _signature(signatures, name)
    if ("instances" in request) == ("inputs" in request):
        raise invalid(
            "the request must have exactly one of 'instances' (row) or 'inputs' (columnar)"
        )
    if "instances" in request:
        instances = request["instances"]
        if not isinstance(instances, list):
            raise invalid("'instances' must be a list, one element per example")
        if not instances:
            raise invalid("'instances' is an empty batch: send at least one instance")
        columns: dict[str, list] = {k: [] for k in info.inputs}
        for i, instance in enumerate(instances):
            for key, value in _named(instance, info, f"instances[{i}]").items():
                columns[key].append(value)
        inputs = {k: to_array(v, k, info.inputs[k]) for k, v in columns.items()}
        row_format = True
    else:
        named = _named(request["inputs"], info, "'inputs'")
        inputs = {k: to_array(v, k, info.inputs[k]) for k, v in named.items()}
        sizes = {k: len(v) for k, v in inputs.items()}
        if len(set(sizes.values())) > 1:
            raise invalid(f"inputs have different batch sizes: {sizes}")
        row_format = False
    return PredictCall(name, inputs, row_format)


def _jsonable(array: np.ndarray, as_b64: bool):
    if array.dtype == object or array.dtype.kind == "S":

        def convert(x):
            if isinstance(x, list):
                return [convert(v) for v in x]
            if as_b64:
                return {"b64": base64.b64encode(x).decode("ascii")}
            try:
                return x.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(x).decode("ascii")}

        return convert(array.tolist())
    return array.tolist()


def encode_predict_response(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
    """The JSON answer, in the format of the request (row or columnar)."""
    columns = {k: _jsonable(v, k.endswith("_bytes")) for k, v in outputs.items()}
    if row_format:
        if len(columns) == 1:
            body = {"predictions": next(iter(columns.values()))}
        else:
            size = len(next(iter(columns.values())))
            body = {"predictions": [{k: v[i] for k, v in columns.items()} for i in range(size)]}
    else:
        body = {"outputs": next(iter(columns.values())) if len(columns) == 1 else columns}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def encode_error(message: str) -> bytes:
    """TF Serving's error body."""
    return json.dumps({"error": message}).encode("utf-8")
