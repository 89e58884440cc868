"""The worker package carries everything the Beam job's workers import.

Builds the wheel remote workers install, unpacks it, and in a fresh
interpreter whose ``sys.path`` is only the unpacked wheel plus the
environment's site-packages (no repository, no editable install, no .pth
files) imports every module of the two packages and runs a small
preprocessing job on the DirectRunner.
"""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile

from beam_preprocess import worker_package
from tests.conftest import reuters_records, write_jsonl

_CHILD = r"""
import importlib, json, os, pkgutil, sys
wheel_dir = sys.argv[1]
modules = []
for package in ("doctags_core", "beam_preprocess"):
    pkg = importlib.import_module(package)
    for info in pkgutil.walk_packages(pkg.__path__, package + "."):
        modules.append(importlib.import_module(info.name))
outside = [m.__name__ for m in modules if not m.__file__.startswith(wheel_dir)]
missing = []
for other in ("trainer", "serving", "doctags"):
    try:
        importlib.import_module(other)
        missing.append(other)
    except ImportError:
        pass
from doctags_core.config import config_from_dict
from beam_preprocess.pipeline import run_preprocess
cfg = config_from_dict(json.loads(sys.argv[2]))
meta = run_preprocess(cfg, ["--runner=DirectRunner"])
print(json.dumps({"modules": len(modules), "outside": outside, "importable": missing,
                  "documents": meta["documents"]["total"], "written": meta["examples_written"]}))
"""


def test_worker_wheel_alone_runs_the_pipeline(tmp_path):
    wheel = worker_package.build_wheel(str(tmp_path / "dist"))
    assert os.path.basename(wheel).startswith("doctags_beam_worker-")
    assert os.path.exists(tmp_path / "dist" / "beam_worker_src" / "setup.py")  # --setup_file
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
        z.extractall(tmp_path / "wheel")
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"doctags_core", "beam_preprocess"}
    for requirement in ("tensorflow==", "numpy==", "pyyaml==", "pyarrow==", "isal==", "orjson=="):
        assert f"requires-dist: {requirement}" in metadata.lower()

    corpus = write_jsonl(str(tmp_path / "docs.jsonl"), reuters_records(40, 10))
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "data": {"input_pattern": corpus, "split_field": "split"},
        "preprocess": {"vocab_size": 500, "min_count": 1, "batch_size": 16},
    }
    wheel_dir = str(tmp_path / "wheel")
    site = sysconfig.get_paths()["purelib"]
    bootstrap = f"import sys; sys.path[:] = [{wheel_dir!r}, {site!r}] + [p for p in sys.path if 'python3' in p and 'site-packages' not in p]\n"  # noqa: E501
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", bootstrap + _CHILD, wheel_dir, json.dumps(cfg)],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["outside"] == []  # every module came from the wheel
    assert report["importable"] == []  # and nothing else of doctags was reachable
    assert report["modules"] >= 15
    assert report["documents"] == 50
    assert sum(report["written"].values()) == 50
