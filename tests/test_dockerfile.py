"""The Dockerfile agrees with the project and with the manifests that run its image.

Docker cannot run on the development machine, so the image is not built
here; these checks catch what usually breaks a build or a deployment: a
COPY of a path that does not exist, a package left out of the image, a Beam
SDK or Python version different from the pins, and manifests naming an
image tag other than the one the build command produces.
"""

import ast
import glob
import os
import re

import yaml

from tests.conftest import REPO

DOCKERFILE = os.path.join(REPO, "Dockerfile")


def instructions():
    with open(DOCKERFILE) as f:
        text = f.read().replace("\\\n", " ")
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def pyproject() -> str:
    # Read as text: tomllib is not in Python 3.10, which the project supports.
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        return f.read()


def version() -> str:
    return re.search(r'^version = "([^"]+)"', pyproject(), re.MULTILINE).group(1)


def pinned(name: str) -> str:
    match = re.search(rf'"{re.escape(name)}(?:\[[^\]]*\])?==([^"]+)"', pyproject())
    assert match, f"{name} is not pinned in pyproject.toml"
    return match.group(1)


def test_every_copied_path_exists_and_every_package_is_copied():
    copied = []
    for keyword, rest in instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            copied += sources
    for source in copied:
        assert os.path.exists(os.path.join(REPO, source)), f"COPY {source}: no such path"
    include = re.search(r"^include = (\[.*\])$", pyproject(), re.MULTILINE).group(1)
    missing = set(ast.literal_eval(include)) - set(copied)
    assert not missing, f"packages missing from the image: {missing}"
    with open(os.path.join(REPO, ".dockerignore")) as f:
        ignored = {line.strip() for line in f if line.strip()}
    assert not ignored & set(copied), "a copied path is excluded by .dockerignore"
    assert {".git", ".venv"} <= ignored


def test_base_images_match_the_pinned_beam_and_python():
    images = [rest.split()[0] for keyword, rest in instructions() if keyword == "FROM"]
    beam = pinned("apache-beam")
    assert f"apache/beam_python3.11_sdk:{beam}" in images
    assert "python:3.11-slim" in images
    # The boot program copied from the SDK image is the entrypoint Beam runners start.
    assert ("ENTRYPOINT", '["/opt/apache/beam/boot"]') in instructions()


def test_manifests_run_the_image_this_dockerfile_builds():
    tag = f"doctags:{version()}"
    with open(DOCKERFILE) as f:
        assert f"docker build -t {tag} ." in f.read()
    seen = 0
    for path in glob.glob(os.path.join(REPO, "k8s", "**", "*.yaml"), recursive=True):
        with open(path) as f:
            text = f.read()
        for image in re.findall(r"image[:=]\s*(\S+)", text):
            if image.startswith("doctags"):
                assert image == tag, f"{path}: {image} != {tag}"
                seen += 1
        for doc in yaml.safe_load_all(text):
            assert doc is None or isinstance(doc, dict)
    assert seen >= 3  # preprocess (launcher and SDK container), training
