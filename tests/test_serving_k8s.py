"""k8s/serving validated offline: Kubernetes schemas, yamllint, TF Serving's config schemas."""

import glob
import os

import kubernetes_validate
import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2
from yamllint import config as yamllint_config
from yamllint import linter

from doctags_core.export_contract import TF_SERVING_VERSION
from serving.batching_config import parse_batching_parameters
from tests.conftest import REPO

MANIFESTS = sorted(glob.glob(os.path.join(REPO, "k8s", "serving", "*.yaml")))
K8S_VERSION = "1.37.0"
# tensorflow_serving/model_servers/main.cc @ 2.20.0: every flag the model server accepts.
TF_SERVING_2_20_FLAGS = set(
    "port grpc_socket_path rest_api_port rest_api_num_threads rest_api_timeout_in_ms "
    "rest_api_enable_cors_support enable_batching batching_parameters_file model_config_file "
    "model_config_file_poll_wait_seconds model_name model_base_path num_load_threads "
    "num_unload_threads max_num_load_retries load_retry_interval_micros "
    "file_system_poll_wait_seconds flush_filesystem_caches tensorflow_session_parallelism "
    "tensorflow_intra_op_parallelism tensorflow_inter_op_parallelism use_alts_credentials "
    "platform_config_file saved_model_tags grpc_channel_arguments grpc_max_threads "
    "enable_model_warmup num_request_iterations_for_warmup version prefer_tflite_model "
    "enable_profiler thread_pool_factory_config_file mixed_precision skip_initialize_tpu "
    "enable_grpc_healthcheck_service".split()
)
YAMLLINT = yamllint_config.YamlLintConfig(
    "{extends: default, rules: {line-length: {max: 100}, document-start: disable}}"
)


def resources():
    docs = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(open(path)):
            docs[doc["kind"]] = doc
    return docs


def test_manifests_exist():
    names = {os.path.basename(p) for p in MANIFESTS}
    assert {"deployment.yaml", "service.yaml", "hpa.yaml", "configmap.yaml"} <= names
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"} <= set(resources())


@pytest.mark.parametrize("path", MANIFESTS, ids=os.path.basename)
def test_manifest_is_valid_kubernetes_and_clean_yaml(path):
    problems = list(linter.run(open(path).read(), YAMLLINT))
    assert problems == [], [str(p) for p in problems]
    for doc in yaml.safe_load_all(open(path)):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validation_is_not_vacuous():
    deployment = resources()["Deployment"]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    del broken["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=False)


def _container():
    return resources()["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def _args():
    return dict(arg[2:].split("=", 1) for arg in _container()["args"])


def test_deployment_runs_tf_serving_2_20_with_known_flags():
    container = _container()
    # The one TF Serving release the export is checked against (op set, loader).
    assert container["image"] == f"tensorflow/serving:{TF_SERVING_VERSION}"
    args = _args()
    assert set(args) <= TF_SERVING_2_20_FLAGS, set(args) - TF_SERVING_2_20_FLAGS
    assert args["enable_batching"] == "true"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": int(args["port"]), "http": int(args["rest_api_port"])}
    resources_ = container["resources"]
    assert resources_["requests"]["cpu"] and resources_["limits"]["memory"]


def test_config_files_parse_with_tf_serving_schemas():
    config_map = resources()["ConfigMap"]
    args = _args()
    mount = {m["name"]: m["mountPath"] for m in _container()["volumeMounts"]}["config"]
    files = {os.path.join(mount, name): text for name, text in config_map["data"].items()}
    models = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(files[args["model_config_file"]], models)
    [model] = models.model_config_list.config
    assert model.model_platform == "tensorflow" and model.base_path.startswith("/models/")
    assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
    batching = parse_batching_parameters(files[args["batching_parameters_file"]])
    assert batching.max_batch_size >= 1 and batching.num_batch_threads >= 1
    # The readiness probe asks TF Serving for this model's status.
    probe = _container()["readinessProbe"]["httpGet"]
    assert probe["path"] == f"/v1/models/{model.name}" and probe["port"] == "http"
    models_mount = {m["name"]: m["mountPath"] for m in _container()["volumeMounts"]}["models"]
    assert model.base_path.startswith(models_mount + "/")


def test_service_and_autoscaler_point_at_the_deployment():
    docs = resources()
    deployment, service, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"grpc", "http"}
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
