"""`doctags serve` and the clients, for real, over loopback (127.0.0.1, ephemeral ports)."""

import dataclasses
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from doctags.cli import main
from serving.batching import BatchingOptions
from serving.client import GrpcClient, RestClient, connect, tags_from_outputs
from serving.errors import ServingError
from serving.server import ModelServer, ServerOptions
from tests.conftest import REPO, reuters_records
from trainer.export import export_model

TEXTS = [r["text"] for r in reuters_records(limit_train=0, limit_test=24) if r["split"] == "test"]


def _copy_version(cfg, base, version):
    shutil.copytree(cfg.export_dir, os.path.join(base, str(version)))


@pytest.fixture(scope="module")
def server(serving_export, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("models") / "tags")
    _copy_version(serving_export, base, 1)
    options = ServerOptions(
        base,
        rest_port=0,
        grpc_port=0,
        batching=BatchingOptions(max_batch_size=32, batch_timeout_micros=2000),
        max_request_bytes=256 << 10,
        poll_seconds=0,
    )
    with ModelServer(options) as running:
        yield running


@pytest.fixture(scope="module")
def in_process(serving_export):
    serve = tf.saved_model.load(serving_export.export_dir).signatures["serving_default"]
    return {k: v.numpy() for k, v in serve(text=tf.constant(TEXTS)).items()}


def test_binds_loopback_by_default(server):
    assert ServerOptions("x").host == "127.0.0.1"
    assert server.options.host == "127.0.0.1"
    assert server.rest_url.startswith("http://127.0.0.1:") and server.rest_port > 0
    assert server.grpc_target.startswith("127.0.0.1:") and server.grpc_port > 0


@pytest.mark.parametrize("kind", ["rest-rows", "rest-columns", "grpc"])
def test_clients_get_the_in_process_answers(server, in_process, kind):
    if kind == "grpc":
        with GrpcClient(server.grpc_target, "tags") as client:
            out = client.predict(TEXTS)
    else:
        out = RestClient(server.rest_url, "tags").predict(TEXTS, columnar=kind == "rest-columns")
    assert set(out) == {"scores", "tags", "tag_scores"}
    np.testing.assert_allclose(out["scores"], in_process["scores"], rtol=1e-5, atol=1e-6)
    served, local = tags_from_outputs(out), tags_from_outputs(in_process)
    assert [[t for t, _ in row] for row in served] == [[t for t, _ in row] for row in local]
    assert sum(len(row) for row in local) > 0  # not vacuous: some texts are tagged
    for row, expected in zip(served, local):
        assert [s for _, s in row] == pytest.approx([s for _, s in expected], rel=1e-5)
    assert len(out["scores"]) == len(TEXTS) == 24


def test_status_and_metadata_match_over_rest_and_grpc(server):
    rest = RestClient(server.rest_url + "/v1/models/tags")
    with GrpcClient(server.grpc_target, "tags") as grpc_client:
        assert rest.status() == grpc_client.status()
        assert rest.metadata() == grpc_client.metadata()
    assert rest.status() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    meta = rest.metadata()
    assert meta["model_spec"] == {"name": "tags", "signature_name": "", "version": "1"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["text"]["dtype"] == "DT_STRING"
    assert set(signature["outputs"]) == {"scores", "tags", "tag_scores"}
    assert signature["method_name"] == "tensorflow/serving/predict"


def test_tokenize_signature_is_served_too(server):
    out = RestClient(server.rest_url, "tags").predict(TEXTS[:2], signature_name="tokenize")
    assert set(out) == {"cleaned", "token_ids"} and out["token_ids"].shape[0] == 2


def test_grpc_output_filter_and_version_in_response(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "tags"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(["Oil prices rose"]))
        request.output_filter.append("tags")
        response = stub.Predict(request, timeout=30)
    assert list(response.outputs) == ["tags"]
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def _post(server, path, body, **headers):
    return requests.post(server.rest_url + path, data=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    "path, body, status, fragment",
    [
        ("/v1/models/tags:predict", b"{oops", 400, "malformed JSON"),
        ("/v1/models/tags:predict", b'{"instances": []}', 400, "empty batch"),
        ("/v1/models/tags:predict", b'{"instances": [{"txt": "a"}]}', 400, "alias not found"),
        ("/v1/models/tags:predict", b'{"inputs": {"text": [1.5]}}', 400, "dtype string"),
        ("/v1/models/tags:predict", b'{"instances": [["a", "b"]]}', 400, "rank 1"),
        ("/v1/models/tags:predict", b'{"text": ["a"]}', 400, "unknown key(s) text"),
        ("/v1/models/nope:predict", b'{"instances": ["a"]}', 404, "Latest(nope)"),
        ("/v1/models/tags/versions/9:predict", b'{"instances": ["a"]}', 404, "Specific(tags, 9)"),
        ("/v1/models/tags/labels/stable:predict", b'{"instances": ["a"]}', 404, "label"),
        ("/v1/models/tags:classify", b'{"examples": []}', 501, ":predict"),
        ("/v2/whatever", b"{}", 404, "Malformed request"),
    ],
)
def test_malformed_rest_requests_get_4xx_json_errors(server, path, body, status, fragment):
    response = _post(server, path, body)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert fragment in response.json()["error"]
    # The server is still healthy afterwards.
    assert RestClient(server.rest_url, "tags").tag(["Oil"])


def test_request_size_limit_and_missing_length(server):
    big = json.dumps({"instances": ["word " * 1000] * 60}).encode()  # ~300 KB > 256 KiB
    response = _post(server, "/v1/models/tags:predict", big)
    assert response.status_code == 413 and "limit" in response.json()["error"]
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    connection.putrequest("POST", "/v1/models/tags:predict")
    connection.endheaders()  # no Content-Length, no body
    answer = connection.getresponse()
    assert answer.status == 411 and "Content-Length" in json.loads(answer.read())["error"]
    connection.close()
    response = requests.get(server.rest_url + "/v1/models/tags/versions/3", timeout=30)
    assert response.status_code == 404 and "version 3" in response.json()["error"]


def test_malformed_grpc_requests_get_clear_status_codes(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def call(**inputs):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = inputs.pop("model", "tags")
            for name, value in inputs.items():
                request.inputs[name].CopyFrom(value)
            with pytest.raises(grpc.RpcError) as err:
                stub.Predict(request, timeout=30)
            return err.value.code(), err.value.details()

        code, details = call(txt=tf.make_tensor_proto(["a"]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "alias not found" in details
        code, details = call(text=tf.make_tensor_proto([1.0, 2.0]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "dtype string, got float" in details
        code, details = call(text=tf.make_tensor_proto(np.array([], dtype=object), tf.string))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "empty batch" in details
        code, details = call(text=tf.make_tensor_proto("scalar"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "scalar" in details
        code, details = call(model="nope", text=tf.make_tensor_proto(["a"]))
        assert code == grpc.StatusCode.NOT_FOUND
        code, _ = call(text=tf.make_tensor_proto(["x" * (300 << 10)]))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    with GrpcClient(server.grpc_target, "tags", version=5) as pinned:
        with pytest.raises(ServingError) as err:
            pinned.tag(["a"])
        assert err.value.code == "NOT_FOUND"


def test_predict_cli_against_the_server(server, capsys):
    for url in (server.rest_url, f"grpc://{server.grpc_target}"):
        assert main(["predict", "--server", url, "--model-name", "tags", "--json", *TEXTS[:3]]) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
        assert [x["text"] for x in lines] == TEXTS[:3]
        assert all(isinstance(t["score"], float) for x in lines for t in x["tags"])
    url = server.rest_url + "/v1/models/nope"
    assert main(["predict", "--server", url, "Oil"]) == 1
    assert "Latest(nope)" in capsys.readouterr().err


def _load(client_factory, total, workers, stop=None):
    """``total`` single-text requests from ``workers`` threads; returns (ok, errors, versions)."""
    counter = iter(range(total))
    lock = threading.Lock()
    ok, errors, versions = [0], [], []

    def worker(index):
        client = client_factory(index)
        while stop is None or not stop.is_set():
            with lock:
                i = next(counter, None)
            if i is None:
                return
            text = TEXTS[i % len(TEXTS)]
            try:
                if isinstance(client, GrpcClient):
                    response = client.predict_response([text])
                    assert response.outputs["scores"].tensor_shape.dim[0].size == 1
                    version = response.model_spec.version.value
                else:
                    out = client.predict([text])
                    assert out["scores"].shape[0] == 1
                    version = None
                with lock:
                    ok[0] += 1
                    versions.append(version)
            except Exception as e:  # every failure is collected and asserted on  # noqa: BLE001
                with lock:
                    errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ok[0], errors, versions


def test_load_2000_requests_from_32_clients_without_error(server):
    rest = RestClient(server.rest_url, "tags")
    grpc_clients = [GrpcClient(server.grpc_target, "tags") for _ in range(16)]
    before = server.manager.batching_stats()[1]["requests"]
    started = time.monotonic()
    ok, errors, _ = _load(lambda i: rest if i % 2 else grpc_clients[i // 2], 2000, 32)
    seconds = time.monotonic() - started
    for client in grpc_clients:
        client.close()
    assert errors == [] and ok == 2000
    stats = server.manager.batching_stats()[1]
    assert stats["requests"] - before == 2000
    assert stats["largest_batch"] > 1  # concurrent requests were merged
    print(f"load: 2000 requests, 32 clients, {seconds:.1f}s, {2000 / seconds:.0f} req/s, {stats}")


def test_new_version_replaces_the_old_one_while_requests_run(serving_export, tmp_path):
    cfg = serving_export
    base = str(tmp_path / "tags")
    _copy_version(cfg, base, 1)
    options = ServerOptions(base, rest_port=0, grpc_port=0, poll_seconds=0.2)
    with ModelServer(options) as running:
        stop = threading.Event()
        grpc_clients = [GrpcClient(running.grpc_target, "tags") for _ in range(4)]
        rest = RestClient(running.rest_url, "tags")
        result = {}
        load = threading.Thread(
            target=lambda: result.update(
                zip(
                    ("ok", "errors", "versions"),
                    _load(lambda i: grpc_clients[i] if i < 4 else rest, 100_000, 8, stop),
                )
            )
        )
        load.start()
        time.sleep(1.0)
        # A real export of version 2, renamed into place atomically under the served base path.
        v2 = dataclasses.replace(
            cfg, export=dataclasses.replace(cfg.export, base_dir=str(tmp_path), version=2)
        )
        assert export_model(v2) == os.path.join(base, "2")
        deadline = time.monotonic() + 120
        states = {}
        while time.monotonic() < deadline:
            states = {s.version: s.state for s in running.manager.status("tags")}
            if states == {2: "AVAILABLE", 1: "END"}:
                break
            time.sleep(0.1)
        time.sleep(1.0)  # keep the load on the new version for a while
        stop.set()
        load.join(timeout=120)
        for client in grpc_clients:
            client.close()
        assert states == {2: "AVAILABLE", 1: "END"}
        assert result["errors"] == [] and result["ok"] > 50
        grpc_versions = [v for v in result["versions"] if v is not None]
        assert 1 in grpc_versions and 2 in grpc_versions
        assert grpc_versions[-1] == 2
        status = RestClient(running.rest_url, "tags").status()["model_version_status"]
        assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE"), ("1", "END")]
        with pytest.raises(ServingError) as err:
            RestClient(running.rest_url, "tags", version=1).tag(["Oil"])
        assert err.value.http_status == 404


def test_a_version_held_by_a_request_is_unloaded_only_when_released(serving_export, tmp_path):
    base = str(tmp_path / "tags")
    _copy_version(serving_export, base, 1)
    options = ServerOptions(
        base, rest_port=None, grpc_port=None, poll_seconds=0, max_num_load_retries=0
    )
    with ModelServer(options) as running:
        manager = running.manager
        with manager.acquire("tags") as held:
            _copy_version(serving_export, base, 2)
            manager.poll()
            states = {s.version: s.state for s in manager.status("tags")}
            assert states == {2: "AVAILABLE", 1: "UNLOADING"}
            # The in-flight request still completes on version 1.
            out = held.predict("serving_default", {"text": np.array([b"Oil prices"], object)})
            assert held.version == 1 and out["scores"].shape[0] == 1
            with manager.acquire("tags") as fresh:
                assert fresh.version == 2
        assert {s.version: s.state for s in manager.status("tags")} == {2: "AVAILABLE", 1: "END"}
        # A broken version 3 does not take the model down.
        os.makedirs(os.path.join(base, "3"))
        open(os.path.join(base, "3", "saved_model.pb"), "wb").write(b"not a model")
        manager.poll()
        states = {s.version: s for s in manager.status("tags")}
        assert states[3].state == "END" and states[3].error_code == "UNKNOWN"
        assert "loading" in states[3].error_message
        with manager.acquire("tags") as current:
            assert current.version == 2


def test_doctags_serve_command(serving_export, tmp_path):
    base = str(tmp_path / "tags")
    _copy_version(serving_export, base, 1)
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 1000 }\n")
    env = {**os.environ, "PYTHONPATH": REPO}
    process = subprocess.Popen(
        [sys.executable, "-m", "doctags", "serve", "--model-base-path", base]
        + ["--rest-port", "0", "--grpc-port", "0", "--batching-parameters-file", str(batching)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(240, process.kill)  # a hung start fails instead of hanging
    watchdog.start()
    try:
        line = process.stdout.readline()
        assert "serving model 'tags'" in line, process.stderr.read()[-3000:]
        assert "versions [1]" in line
        rest_url = re.search(r"REST (http://127\.0\.0\.1:\d+)/v1/models/tags", line)[1]
        target = re.search(r"gRPC (127\.0\.0\.1:\d+)", line)[1]
        assert connect(rest_url, "tags").tag(TEXTS[:2])
        with connect(f"grpc://{target}", "tags") as client:
            assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        watchdog.cancel()
    assert process.returncode == 0, err[-3000:]


def test_serve_command_errors_are_clear(tmp_path, capsys):
    assert main(["serve", "--model-base-path", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    bad = tmp_path / "batching.config"
    bad.write_text("max_batch_sise { value: 1 }")
    with pytest.raises(SystemExit, match="max_batch_sise"):
        main(["serve", "--model-base-path", str(tmp_path), "--batching-parameters-file", str(bad)])
