"""Issue 12 with real processes: SIGKILLed exports and trainings (slow).

The scenarios are `bench/faults_train_export.py`'s own functions, so the
benchmark and the test cannot drift apart; each returns its numbers and
whether it passed. The file-system-only checks run fast in
tests/test_atomic_outputs.py.
"""

import pytest

from bench import faults_train_export as faults


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return faults.ensure_trained(str(tmp_path_factory.mktemp("faults")))


@pytest.mark.slow
def test_version_folder_is_always_complete_while_exports_are_sigkilled(trained):
    result = faults.export_sigkill(trained, kills=4, seed=1)
    assert result.passed, result.line()
    assert result.numbers["missing"] == 0 and result.numbers["checks"] > 1000


@pytest.mark.slow
def test_train_sigkilled_while_saving_keeps_the_previous_model(trained):
    result = faults.train_sigkill(trained)
    assert result.passed, result.line()
