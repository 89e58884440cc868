"""doctags turns TensorFlow's oneDNN kernels on unless the user chose otherwise.

Checked in fresh interpreters, because the switch is read once, when
TensorFlow is imported: what matters is that importing a doctags package
first is enough, and that an explicit setting wins.
"""

import os
import subprocess
import sys

import pytest

_PROBE = (
    "import {module}\n"
    "import tensorflow\n"
    "from tensorflow.python.util import _pywrap_util_port\n"
    "print('onednn', _pywrap_util_port.IsMklEnabled())\n"
)


def _onednn_after_importing(module: str, setting: str | None) -> bool:
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    return out.strip().splitlines()[-1] == "onednn True"


@pytest.mark.parametrize("module", ["trainer.models", "doctags.cli"])
def test_importing_doctags_before_tensorflow_turns_onednn_on(module):
    assert _onednn_after_importing(module, None)


def test_an_explicit_setting_is_kept():
    assert not _onednn_after_importing("trainer.models", "0")
