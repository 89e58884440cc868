r"""TF_CONFIG: reading the cluster it describes, and building it for an Indexed Job.

MultiWorkerMirroredStrategy learns the cluster from the ``TF_CONFIG``
environment variable. The Kubeflow training operator writes it into every
TFJob pod; a plain Kubernetes Indexed Job does not, so this module's
entry point builds it from the pod's completion index and the stable DNS
names the Job's headless Service gives its pods, then runs the trainer::

    python -m trainer.tf_config --job-name JOB --service SERVICE --workers 2 \
        -- doctags train --config CONFIG

Both ways end with the same variable, so the trainer has one code path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

ENV = "TF_CONFIG"
INDEX_ENV = "JOB_COMPLETION_INDEX"
DEFAULT_PORT = 2222


@dataclass(frozen=True)
class ClusterRole:
    """This process's place in the cluster.

    Attributes:
        task_type: ``chief`` or ``worker`` (``worker`` when there is no cluster).
        task_index: Index within ``task_type``.
        num_workers: Processes that train (chief included).
        is_chief: Writes the outputs. With an explicit ``chief`` task that is
            the chief; otherwise worker 0, as TensorFlow and the Kubeflow
            operator agree.
    """

    task_type: str = "worker"
    task_index: int = 0
    num_workers: int = 1
    is_chief: bool = True

    @property
    def multi_worker(self) -> bool:
        """True when several processes train one model together."""
        return self.num_workers > 1


def parse(raw: str | None) -> ClusterRole:
    """The role described by a TF_CONFIG value (``None``/empty: a lone process).

    Raises:
        ValueError: for invalid JSON, a task missing from the cluster, or a
            task type that does not train here (``ps``, ``evaluator``).
    """
    if not raw:
        return ClusterRole()
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{ENV} is not valid JSON: {e}") from e
    cluster = spec.get("cluster") or {}
    task = spec.get("task") or {}
    trainers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    if trainers <= 1:
        return ClusterRole()
    task_type, task_index = task.get("type"), task.get("index", 0)
    if task_type not in ("chief", "worker"):
        raise ValueError(
            f"{ENV} task type {task_type!r}: MultiWorkerMirroredStrategy trains on "
            "'chief' and 'worker' tasks only (no parameter servers or evaluators)"
        )
    if not 0 <= int(task_index) < len(cluster.get(task_type, [])):
        raise ValueError(f"{ENV} task {task_type}:{task_index} is not in its cluster")
    is_chief = task_type == "chief" or ("chief" not in cluster and int(task_index) == 0)
    return ClusterRole(task_type, int(task_index), trainers, is_chief)


def current() -> ClusterRole:
    """The role of this process, from the environment."""
    return parse(os.environ.get(ENV))


def indexed_job_tf_config(
    index: int, job_name: str, service: str, workers: int, port: int = DEFAULT_PORT
) -> str:
    """TF_CONFIG for pod ``index`` of an Indexed Job behind a headless Service.

    Kubernetes names the pods of an Indexed Job ``JOB-INDEX`` and, when the pod
    template sets ``subdomain: SERVICE``, resolves ``JOB-INDEX.SERVICE``
    inside the namespace. Worker 0 is the chief.

    Raises:
        ValueError: for an index outside ``[0, workers)``.
    """
    if not 0 <= index < workers:
        raise ValueError(f"{INDEX_ENV}={index} is outside [0, {workers})")
    hosts = [f"{job_name}-{i}.{service}:{port}" for i in range(workers)]
    return json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})


def main(argv: list[str] | None = None) -> int:
    """Sets TF_CONFIG from the pod's completion index, then execs the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m trainer.tf_config OPTIONS -- COMMAND ...", file=sys.stderr)
        return 2
    cut = argv.index("--")
    parser = argparse.ArgumentParser(
        prog="python -m trainer.tf_config", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--job-name", required=True, help="the Job's metadata.name")
    parser.add_argument("--service", required=True, help="the headless Service (pod subdomain)")
    parser.add_argument("--workers", type=int, required=True, help="the Job's completions")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv[:cut])
    command = argv[cut + 1 :]
    if not command:
        parser.error("no command after --")
    if os.environ.get(ENV):
        print(f"{ENV} already set (e.g. by the Kubeflow operator); leaving it", file=sys.stderr)
    else:
        index = int(os.environ.get(INDEX_ENV, "-1"))
        os.environ[ENV] = indexed_job_tf_config(
            index, args.job_name, args.service, args.workers, args.port
        )
    os.execvp(command[0], command)
    return 0  # pragma: no cover (execvp does not return)


if __name__ == "__main__":
    sys.exit(main())
