"""The README's first command: the main example trains on local-cluster Spark and prints its accuracy."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.integration.spark_helpers import wait_no_node_processes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_main_example_trains_with_mwms_fit_and_prints_final_accuracy(tmp_path):
    result = subprocess.run(
        [sys.executable, "examples/mnist/keras_mwms.py", "--epochs", "4",
         "--data-dir", str(tmp_path / "data"), "--export-dir", str(tmp_path / "export")],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    match = re.search(r"^final accuracy: (\d\.\d+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout[-3000:]
    assert float(match.group(1)) > 0.85
    assert wait_no_node_processes() == []
