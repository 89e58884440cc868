"""Issue 13: what preprocessing shows: its runner, its progress, and only doctags' lines.

The terminal tests run the real ``doctags`` command in a subprocess (its own
process, as a user runs it) and sort every line of its stdout and stderr.
"""

import io
import logging
import os
import re
import subprocess
import sys
import time

from beam_preprocess.pipeline import build_pipeline, run_preprocess
from doctags.console import OWN_LOGGERS
from doctags_core import beam_io, progress
from doctags_core.config import load_config
from tests.conftest import REPO, small_config

DIRECT = ["--runner=DirectRunner"]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ([\w.]+): ")
# What doctags itself prints: the summary, the data report, progress.
OWN_PRINTS = re.compile(r"^(preprocess: |  vocabulary |data report: |  (ERROR|WARNING|INFO) )")


def test_a_local_run_never_tries_prism_and_records_its_runner(reuters_slice, tmp_path, caplog):
    """``DirectRunner`` in the config: the FnApiRunner runs, Prism is never tried."""
    cfg = load_config(small_config(tmp_path, reuters_slice))
    assert cfg.preprocess.runner == "DirectRunner"
    with caplog.at_level(logging.DEBUG):
        meta = run_preprocess(cfg)
    assert meta["runner"] == "FnApiRunner"
    assert "Prism" not in caplog.text and "prism" not in caplog.text
    assert "Beam runner: FnApiRunner" in caplog.text


def _foreign_lines(text: str) -> list[str]:
    """Lines neither logged by a doctags logger nor printed by doctags."""
    foreign = []
    for line in text.splitlines():
        if not line.strip():
            continue
        logged = LOG_LINE.match(line)
        if logged and logged[1].split(".")[0] in OWN_LOGGERS:
            continue
        if not logged and OWN_PRINTS.match(line):
            continue
        foreign.append(line)
    return foreign


def _cli(args, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "doctags", *args],
        cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_the_terminal_shows_doctags_lines_only_and_the_rest_with_v(reuters_slice, tmp_path):
    config = small_config(tmp_path, reuters_slice)
    env_level = os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
    try:
        quiet = _cli(["preprocess", "--config", config], tmp_path)
        verbose = _cli(["-v", "preprocess", "--config", config], tmp_path)
    finally:
        if env_level is not None:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = env_level
    assert _foreign_lines(quiet) == [], quiet
    assert "preprocess: 400 records read" in quiet
    noise = _foreign_lines(verbose)
    assert any("apache_beam" in line for line in noise), verbose[-3000:]
    assert any("cuda" in line.lower() or "absl" in line for line in noise), verbose[-3000:]


def test_progress_is_logged_while_the_job_runs(reuters_slice, tmp_path, caplog):
    cfg = load_config(small_config(tmp_path, reuters_slice))
    options = beam_io.pipeline_options("DirectRunner", beam_args=DIRECT)
    with caplog.at_level(logging.INFO, logger="doctags_core.progress"):
        with progress.reporting("preprocess", terminal=False, interval=0.05):
            with beam_io.make_pipeline(options) as pipeline:
                build_pipeline(pipeline, cfg, str(tmp_path / "staging"), "r1", "FnApiRunner")
            final = progress.snapshot()
    lines = [r.getMessage() for r in caplog.records if r.name == "doctags_core.progress"]
    assert lines and all(line.startswith("preprocess: ") for line in lines)
    assert final == {progress.READ: 400, progress.WRITTEN: 400}
    assert re.match(r"preprocess: 400 records read \([\d,]+/s\), 400 written", lines[-1])


def test_progress_at_a_terminal_is_one_line_redrawn():
    screen = io.StringIO()
    with progress.reporting("preprocess", terminal=True, stream=screen, interval=0.01) as shown:
        progress.add(progress.READ, 1200)
        progress.add(progress.DEAD, 3)
        deadline = time.monotonic() + 30
        while not shown.drawn and time.monotonic() < deadline:
            time.sleep(0.01)
    text = screen.getvalue()
    assert text.startswith("\r\x1b[2Kpreprocess: 1,200 records read (")
    assert "0 written (0/s), 3 dead letters" in text and "\n" not in text
    assert text.endswith("\r\x1b[2K")  # cleared for the summary that follows
