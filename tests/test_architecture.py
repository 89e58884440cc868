"""The layout is the data path: stages import only the core, the core imports no stage."""

import ast
import glob
import os

import pytest

from tests.conftest import REPO

STAGES = ("beam_preprocess", "trainer", "serving", "evaluation")
CORE = "doctags_core"
PACKAGES = (CORE, *STAGES, "doctags")


def imported_packages(path: str) -> set[str]:
    """The project packages a module imports (at any depth, lazily or not)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(PACKAGES)


def modules(package: str) -> list[str]:
    return sorted(glob.glob(os.path.join(REPO, package, "**", "*.py"), recursive=True))


@pytest.mark.parametrize("package", [CORE, *STAGES])
def test_imports_follow_the_data_path(package):
    allowed = {CORE} if package == CORE else {CORE, package}
    found = {os.path.relpath(p, REPO): imported_packages(p) - allowed for p in modules(package)}
    assert not {m: sorted(bad) for m, bad in found.items() if bad}


def test_every_stage_and_the_core_has_modules():
    for package in PACKAGES:
        assert len(modules(package)) >= 2, package
