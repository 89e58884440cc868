"""The training and preprocessing manifests, validated offline.

Core kinds go through kubernetes-validate (strict: unknown fields are
errors). The TFJob is checked against the CRD schema shipped in
k8s/training/crd/ with jsonschema, with the API server's strict field
validation applied, and each of its pod templates as a core PodTemplate.
Then what the manifests say is checked against what the code does: the
entry point builds the TF_CONFIG the trainer reads, the config parses.
"""

import copy
import glob
import json
import os
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml
from yamllint import config as yamllint_config
from yamllint import linter

from doctags.cli import build_parser
from doctags_core.config import load_config
from tests.conftest import REPO
from trainer import tf_config

K8S_VERSION = "1.30"
TRAINING = os.path.join(REPO, "k8s", "training")
PREPROCESS = os.path.join(REPO, "k8s", "preprocess")
CRD = os.path.join(TRAINING, "crd", "tfjobs.kubeflow.org.yaml")
CONFIG_PATH = "/etc/doctags/reuters.yaml"


def documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def all_documents():
    paths = sorted(glob.glob(os.path.join(TRAINING, "**", "*.yaml"), recursive=True))
    paths += sorted(glob.glob(os.path.join(PREPROCESS, "*.yaml")))
    return [(os.path.relpath(p, REPO), d) for p in paths for d in documents(p)]


def one(kind, name=None):
    found = [d for _, d in all_documents() if d["kind"] == kind]
    if name:
        found = [d for d in found if d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


CORE = [(path, doc) for path, doc in all_documents() if doc["kind"] != "TFJob"]


@pytest.mark.parametrize(
    "path,doc", CORE, ids=[f"{p}:{d['kind']}/{d['metadata']['name']}" for p, d in CORE]
)
def test_core_manifests_validate(path, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_manifests_pass_yamllint():
    rules = yamllint_config.YamlLintConfig(
        "{extends: default, rules: {line-length: {max: 100}, document-start: disable}}"
    )
    paths = glob.glob(os.path.join(TRAINING, "**", "*.yaml"), recursive=True)
    paths += glob.glob(os.path.join(PREPROCESS, "*.yaml"))
    problems = [
        f"{os.path.relpath(path, REPO)}:{p.line}: {p.desc}"
        for path in paths
        for p in linter.run(open(path).read(), rules)
    ]
    assert problems == []


def test_every_expected_manifest_is_there():
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in all_documents()}
    assert {
        ("TFJob", "doctags-train"),
        ("Job", "doctags-train-indexed"),
        ("Service", "doctags-train-workers"),
        ("Job", "doctags-preprocess"),
        ("ConfigMap", "doctags-config"),
        ("ServiceAccount", "doctags"),
        ("CustomResourceDefinition", "tfjobs.kubeflow.org"),
    } <= kinds


def test_kubernetes_validate_catches_a_misspelt_field():
    job = copy.deepcopy(one("Job", "doctags-train-indexed"))
    job["spec"]["parallelizm"] = job["spec"].pop("parallelism")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def strict_fields(schema):
    """The API server's strict field validation: unknown fields are errors."""
    schema = copy.deepcopy(schema)

    def close(node):
        if not isinstance(node, dict):
            return
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            if isinstance(value, dict):
                close(value)
            elif isinstance(value, list):
                for item in value:
                    close(item)

    close(schema)
    return schema


def tfjob_schema():
    crd = documents(CRD)[0]
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return strict_fields(version["schema"]["openAPIV3Schema"])


def validate_tfjob(doc):
    jsonschema.Draft7Validator(tfjob_schema()).validate(doc)
    for replica in doc["spec"]["tfReplicaSpecs"].values():
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "replica"},
            "template": replica["template"],
        }
        kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)


def test_tfjob_validates_against_the_shipped_crd_schema():
    tfjob = one("TFJob")
    validate_tfjob(tfjob)
    crd = documents(CRD)[0]
    assert (tfjob["apiVersion"], tfjob["kind"]) == (
        f"{crd['spec']['group']}/v1",
        crd["spec"]["names"]["kind"],
    )
    worker = tfjob["spec"]["tfReplicaSpecs"]["Worker"]
    (container,) = worker["template"]["spec"]["containers"]
    # The operator injects TF_CONFIG into the container named "tensorflow",
    # on the port named "tfjob-port".
    assert container["name"] == "tensorflow"
    assert container["ports"][0]["name"] == "tfjob-port"
    assert container["command"][:2] == ["doctags", "train"]
    assert worker["replicas"] >= 2 and worker["restartPolicy"] == "OnFailure"


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["spec"]["tfReplicaSpecs"].update(Wroker=d["spec"]["tfReplicaSpecs"]["Worker"]),
        lambda d: d["spec"]["tfReplicaSpecs"]["Worker"].update(restartPolicy="Sometimes"),
        lambda d: d["spec"].update(runPolicy={"cleanPodPolicy": "Some"}),
        lambda d: d["spec"].update(tfReplicaSpec={}),
        lambda d: d["spec"]["tfReplicaSpecs"]["Worker"].update(replicas="two"),
        lambda d: d["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"].pop("containers"),
        lambda d: d["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0].update(
            imagePullPolicee="Always"
        ),
    ],
    ids=[
        "replica-type",
        "restart-policy",
        "clean-pod-policy",
        "unknown-field",
        "replicas-type",
        "no-containers",
        "pod-spec",
    ],
)
def test_broken_tfjobs_are_rejected(breakage):
    tfjob = copy.deepcopy(one("TFJob"))
    breakage(tfjob)
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate_tfjob(tfjob)


def _entrypoint_args(container):
    command = container["command"]
    assert command[:3] == ["python", "-m", "trainer.tf_config"]
    cut = command.index("--")
    return command[3:cut], command[cut + 1 :]


def test_indexed_job_service_and_entrypoint_agree():
    job = one("Job", "doctags-train-indexed")
    service = one("Service", "doctags-train-workers")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    options, trainer_command = _entrypoint_args(container)
    flags = dict(zip(options[::2], options[1::2]))
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(flags["--workers"])
    assert flags["--job-name"] == job["metadata"]["name"]
    assert flags["--service"] == service["metadata"]["name"] == pod["subdomain"]
    assert service["spec"]["clusterIP"] == "None"  # headless: per-pod DNS records
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    assert int(flags["--port"]) == container["ports"][0]["containerPort"]
    assert trainer_command[:2] == ["doctags", "train"]
    assert pod["restartPolicy"] == "OnFailure"

    # Run the entry point with the manifest's own options for every pod index.
    for index in range(spec["completions"]):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "trainer.tf_config",
                *options,
                "--",
                sys.executable,
                "-c",
                "import os; print(os.environ['TF_CONFIG'])",
            ],
            cwd=REPO,
            env={**os.environ, "JOB_COMPLETION_INDEX": str(index), "TF_CONFIG": ""},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        raw = done.stdout.strip()
        hosts = json.loads(raw)["cluster"]["worker"]
        assert hosts == [
            f"{job['metadata']['name']}-{i}.{service['metadata']['name']}:{flags['--port']}"
            for i in range(spec["completions"])
        ]
        role = tf_config.parse(raw)
        assert (role.task_index, role.is_chief, role.num_workers) == (
            index,
            index == 0,
            spec["completions"],
        )


def test_entrypoint_leaves_an_operator_tf_config_alone():
    given = json.dumps(
        {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.tf_config",
            "--job-name",
            "j",
            "--service",
            "s",
            "--workers",
            "2",
            "--",
            sys.executable,
            "-c",
            "import os; print(os.environ['TF_CONFIG'])",
        ],
        cwd=REPO,
        env={**os.environ, "TF_CONFIG": given},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == given


def test_configmap_holds_a_valid_doctags_config(tmp_path):
    configmap = one("ConfigMap", "doctags-config")
    path = tmp_path / os.path.basename(CONFIG_PATH)
    path.write_text(configmap["data"][os.path.basename(CONFIG_PATH)])
    cfg = load_config(str(path), check_inputs=False)
    # Shared storage: workers restore the chief's checkpoints from output_dir.
    assert cfg.output_dir.startswith("gs://")
    assert all(p.startswith("gs://") for p in cfg.data.input_pattern)
    # Every pod mounts it where its command reads it.
    for kind, name in (
        ("TFJob", None),
        ("Job", "doctags-train-indexed"),
        ("Job", "doctags-preprocess"),
    ):
        doc = one(kind, name)
        template = (
            doc["spec"]["tfReplicaSpecs"]["Worker"]["template"]
            if kind == "TFJob"
            else doc["spec"]["template"]
        )
        (container,) = template["spec"]["containers"]
        assert CONFIG_PATH in container["command"]
        (volume,) = template["spec"]["volumes"]
        assert volume["configMap"]["name"] == "doctags-config"
        assert container["volumeMounts"][0]["mountPath"] == os.path.dirname(CONFIG_PATH)


def test_preprocess_job_launches_dataflow_through_the_cli(tmp_path):
    from apache_beam.options.pipeline_options import StandardOptions

    from beam_preprocess.pipeline import pipeline_options

    job = one("Job", "doctags-preprocess")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[0] == "doctags"
    cut = command.index("--")
    args = build_parser().parse_args(command[1:cut])
    assert (args.command, args.config) == ("preprocess", CONFIG_PATH)
    configmap = one("ConfigMap", "doctags-config")
    path = tmp_path / "reuters.yaml"
    path.write_text(configmap["data"]["reuters.yaml"])
    cfg = load_config(str(path), check_inputs=False)
    options = pipeline_options(cfg, command[cut + 1 :])
    assert options.view_as(StandardOptions).runner == "DataflowRunner"  # beats the config
    flags = options.get_all_options()
    assert flags["temp_location"].startswith("gs://")
    assert flags["sdk_container_image"] == container["image"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
