"""TF Serving's REST JSON format and the dynamic batcher, without a model."""

import base64
import json
import threading
import time

import numpy as np
import pytest

from serving import protocol
from serving.batching import Batcher, BatchingOptions, concat_padded
from serving.batching_config import parse_batching_parameters
from serving.errors import ServingError

SIGNATURES = {
    "serving_default": protocol.SignatureInfo(
        inputs={"text": protocol.TensorInfo("string", (None,))},
        outputs={
            "scores": protocol.TensorInfo("float32", (None, 3)),
            "tags": protocol.TensorInfo("string", (None, None)),
        },
    ),
    "two": protocol.SignatureInfo(
        inputs={
            "x": protocol.TensorInfo("float32", (None, 2)),
            "k": protocol.TensorInfo("int64", (None,)),
        },
        outputs={"y": protocol.TensorInfo("float32", (None,))},
    ),
}


def parse(body):
    return protocol.parse_predict_request(json.dumps(body).encode(), SIGNATURES)


def test_row_and_columnar_requests_give_the_same_batch():
    for body in (
        {"instances": ["a", "b"]},
        {"instances": [{"text": "a"}, {"text": "b"}]},
        {"inputs": ["a", "b"]},
        {"inputs": {"text": ["a", "b"]}},
        {"instances": [{"b64": base64.b64encode(b"a").decode()}, "b"]},
    ):
        call = parse(body)
        assert call.signature_name == "serving_default"
        assert call.inputs["text"].tolist() == [b"a", b"b"], body
        assert call.row_format == ("instances" in body)


def test_multi_input_signature_and_numeric_types():
    call = parse({"signature_name": "two", "instances": [{"x": [1, 2.5], "k": 3}] * 2})
    assert call.inputs["x"].dtype == np.float32 and call.inputs["x"].shape == (2, 2)
    assert call.inputs["k"].dtype == np.int64 and call.inputs["k"].tolist() == [3, 3]
    call = parse({"signature_name": "two", "inputs": {"x": [[0, 1]], "k": [7]}})
    assert call.batch_size == 1


@pytest.mark.parametrize(
    "body, code, fragment",
    [
        (b"{not json", "INVALID_ARGUMENT", "malformed JSON"),
        (b"\xff\xfe", "INVALID_ARGUMENT", "malformed JSON"),
        (b"[1, 2]", "INVALID_ARGUMENT", "JSON object"),
        (b'{"instances": []}', "INVALID_ARGUMENT", "empty batch"),
        (b'{"inputs": {"text": []}}', "INVALID_ARGUMENT", "empty batch"),
        (b'{"instances": "abc"}', "INVALID_ARGUMENT", "must be a list"),
        (b'{"inputs": "abc"}', "INVALID_ARGUMENT", "must be a batch"),
        (b'{"instances": ["a"], "inputs": ["a"]}', "INVALID_ARGUMENT", "exactly one of"),
        (b'{"signature": "x", "instances": ["a"]}', "INVALID_ARGUMENT", "unknown key(s) signature"),
        (b'{"instances": [{"txt": "a"}]}', "INVALID_ARGUMENT", "alias not found in signature: txt"),
        (b'{"instances": [1, 2]}', "INVALID_ARGUMENT", "dtype string"),
        (b'{"instances": [["a"], ["b", "c"]]}', "INVALID_ARGUMENT", "ragged"),
        (b'{"instances": [["a"], ["b"]]}', "INVALID_ARGUMENT", "rank 1"),
        (b'{"instances": [{"b64": "%%%"}]}', "INVALID_ARGUMENT", "invalid base64"),
        (b'{"signature_name": "nope", "instances": ["a"]}', "INVALID_ARGUMENT", '"nope" not found'),
        (b'{"signature_name": "two", "instances": [{"x": [1, 2]}]}', "INVALID_ARGUMENT", "missing"),
        (
            b'{"signature_name": "two", "inputs": {"x": [[1, "a"]], "k": [1]}}',
            "INVALID_ARGUMENT",
            "expected a number",
        ),
        (
            b'{"signature_name": "two", "inputs": {"x": [[1, 2, 3]], "k": [1]}}',
            "INVALID_ARGUMENT",
            "must have shape [-1, 2]",
        ),
        (
            b'{"signature_name": "two", "inputs": {"x": [[1, 2]], "k": [1, 2]}}',
            "INVALID_ARGUMENT",
            "different batch sizes",
        ),
        (b'{"signature_name": "two", "instances": [1]}', "INVALID_ARGUMENT", "name each of them"),
    ],
)
def test_malformed_requests_are_rejected_with_a_message(body, code, fragment):
    with pytest.raises(ServingError) as err:
        protocol.parse_predict_request(body, SIGNATURES)
    assert err.value.code == code
    assert err.value.http_status == (404 if code == "NOT_FOUND" else 400)
    assert fragment in err.value.message


def test_responses_follow_the_request_format():
    outputs = {
        "scores": np.array([[0.5, 0.25, 0.0], [1.0, 0.0, 0.0]], np.float32),
        "tags": np.array([[b"earn", b""], ["caf\u00e9".encode(), b"acq"]], dtype=object),
    }
    rows = json.loads(protocol.encode_predict_response(outputs, row_format=True))
    assert rows == {
        "predictions": [
            {"scores": [0.5, 0.25, 0.0], "tags": ["earn", ""]},
            {"scores": [1.0, 0.0, 0.0], "tags": ["caf\u00e9", "acq"]},
        ]
    }
    columns = json.loads(protocol.encode_predict_response(outputs, row_format=False))
    assert columns["outputs"]["tags"] == [["earn", ""], ["caf\u00e9", "acq"]]
    raw = {"blob_bytes": np.array([b"\x00\xff"], dtype=object)}
    assert json.loads(protocol.encode_predict_response(raw, True)) == {
        "predictions": [{"b64": "AP8="}]
    }
    assert json.loads(protocol.encode_error("bad")) == {"error": "bad"}


def _echo_model(calls):
    def run(key, inputs):
        calls.append(len(inputs["x"]))
        time.sleep(0.01)
        x = inputs["x"]
        width = int(x.max()) + 1  # an output whose inner size depends on the batch
        return {"y": x * 2, "padded": np.ones((len(x), width), np.int32)}

    return run


def test_concurrent_requests_are_batched_and_answered_with_their_own_rows():
    calls = []
    options = BatchingOptions(max_batch_size=16, batch_timeout_micros=50_000, num_batch_threads=1)
    batcher = Batcher(_echo_model(calls), options)
    results, errors = {}, []

    def client(i):
        try:
            x = np.array([i, i + 100], np.int64)
            results[i] = batcher.submit(Batcher.key("s", {"x": x}), {"x": x})
        except Exception as e:  # collected, asserted below  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert errors == []
    for i, out in results.items():
        assert out["y"].tolist() == [2 * i, 2 * (i + 100)]
        assert out["padded"].shape[0] == 2
    assert sum(calls) == 16 and max(calls) > 2  # merged, never above max_batch_size
    assert batcher.stats["requests"] == 8 and batcher.stats["rows"] == 16


def test_large_requests_are_split_and_rejoined_with_padding():
    calls = []
    options = BatchingOptions(
        max_batch_size=16, enable_large_batch_splitting=True, max_execution_batch_size=4
    )
    batcher = Batcher(_echo_model(calls), options)
    x = np.arange(10, dtype=np.int64)
    out = batcher.submit(Batcher.key("s", {"x": x}), {"x": x})
    batcher.close()
    assert calls == [4, 4, 2]
    assert out["y"].tolist() == (x * 2).tolist()
    assert out["padded"].shape == (10, 10)  # widest chunk; narrower ones padded with 0
    assert out["padded"][0].tolist() == [1, 1, 1, 1] + [0] * 6
    strings = concat_padded([np.array([[b"a"]], object), np.array([[b"b", b"c"]], object)])
    assert strings.tolist() == [[b"a", b""], [b"b", b"c"]]


def test_a_full_queue_refuses_with_unavailable():
    release, running = threading.Event(), threading.Event()

    def slow(key, inputs):
        running.set()
        release.wait(5)
        return {"y": inputs["x"]}

    options = BatchingOptions(max_batch_size=2, max_enqueued_batches=1, num_batch_threads=1)
    batcher = Batcher(slow, options)
    x = np.zeros(2, np.int64)
    first = threading.Thread(target=batcher.submit, args=(Batcher.key("s", {"x": x}), {"x": x}))
    first.start()
    assert running.wait(5)  # the worker holds the first batch; the queue is empty
    second = threading.Thread(target=batcher.submit, args=(Batcher.key("s", {"x": x}), {"x": x}))
    second.start()
    while batcher._queued_rows < 2:
        time.sleep(0.01)
    with pytest.raises(ServingError) as err:
        batcher.submit(Batcher.key("s", {"x": x}), {"x": x})
    assert err.value.code == "UNAVAILABLE" and err.value.http_status == 503
    release.set()
    first.join()
    second.join()
    batcher.close()


def test_model_errors_reach_every_request_of_the_batch():
    def broken(key, inputs):
        raise ServingError("INVALID_ARGUMENT", "bad batch")

    batcher = Batcher(broken, BatchingOptions())
    x = np.zeros(1, np.int64)
    with pytest.raises(ServingError, match="bad batch"):
        batcher.submit(Batcher.key("s", {"x": x}), {"x": x})
    batcher.close()


def test_tf_serving_batching_parameters_file_is_parsed_with_its_schema():
    options = parse_batching_parameters(
        "max_batch_size { value: 32 }\n"
        "batch_timeout_micros { value: 1500 }\n"
        "num_batch_threads { value: 3 }\n"
        "allowed_batch_sizes: 8\nallowed_batch_sizes: 32\n"
        "pad_variable_length_inputs: true\n"
    )
    assert (options.max_batch_size, options.batch_timeout_micros) == (32, 1500)
    assert options.num_batch_threads == 3 and options.max_enqueued_batches == 100
    with pytest.raises(ValueError, match="max_batch_sise"):
        parse_batching_parameters("max_batch_sise { value: 32 }")
    with pytest.raises(ValueError):
        parse_batching_parameters("max_batch_size: 32")  # a wrapper message, not a scalar
