"""A small Python environment with the TensorFlow that the targeted TF Serving links.

    python -m serving.tf_serving_env [--dir .venv-tf-serving]   # prints its python

TF Serving cannot be installed here, but its runtime can: TF Serving
``X.Y.Z`` is built against TensorFlow ``X.Y`` and tensorflow-text ``X.Y``.
This environment holds exactly those (``tensorflow-cpu``, ``tensorflow-text``,
and tensorflow-serving-api's protos for the warmup file, without their
dependencies, which would pull in another TensorFlow), so that
`serving.loader_check` can load our exports with TF Serving's session-based
loader under TF Serving's own TensorFlow release. The versions follow
`doctags_core.export_contract.TF_SERVING_VERSION`; `.ci/run` builds it
before the tests, which otherwise build it on first use.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from doctags_core.export_contract import TF_SERVING_VERSION, tf_serving_minor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIR = os.path.join(REPO, ".venv-tf-serving")
STAMP = "doctags-tf-serving-version"


def requirements() -> tuple[list[str], list[str]]:
    """``(with dependencies, without)``: pip requirement strings for the environment."""
    minor = tf_serving_minor()
    return (
        [f"tensorflow-cpu=={minor}.*", f"tensorflow-text=={minor}.*"],
        [f"tensorflow-serving-api=={minor}.*"],
    )


def python_of(directory: str) -> str:
    """The environment's interpreter."""
    return os.path.join(directory, "bin", "python")


def ensure_env(directory: str = DEFAULT_DIR) -> str:
    """Builds the environment unless it exists for this TF Serving version; returns its python.

    Raises:
        subprocess.CalledProcessError: when venv or pip fail (the output
            says why; usually no access to PyPI).
    """
    stamp = os.path.join(directory, STAMP)
    if os.path.exists(stamp) and open(stamp).read().strip() == TF_SERVING_VERSION:
        return python_of(directory)
    subprocess.run([sys.executable, "-m", "venv", "--clear", directory], check=True)
    pip = [python_of(directory), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    with_deps, without_deps = requirements()
    subprocess.run([*pip, *with_deps], check=True)
    subprocess.run([*pip, "--no-deps", *without_deps], check=True)
    with open(stamp, "w") as f:
        f.write(TF_SERVING_VERSION + "\n")
    return python_of(directory)


def run_loader_check(python: str, exports: list[str]) -> subprocess.CompletedProcess:
    """`serving.loader_check` on ``exports`` in the environment of ``python``."""
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [python, "-m", "serving.loader_check", *exports],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )


def main(argv: list[str] | None = None) -> int:
    """Builds (or finds) the environment and prints its python."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=DEFAULT_DIR, help="where the environment lives")
    args = parser.parse_args(argv)
    print(ensure_env(args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
