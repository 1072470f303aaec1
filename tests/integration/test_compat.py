"""TensorFlowOnSpark-style scripts that import tfos.compat, run by pyspark's own spark-submit.

compat_scripts/mnist_tf.py (InputMode.TENSORFLOW, each node reads the CSV itself) and
compat_scripts/mnist_spark.py (InputMode.SPARK, an RDD fed through TFNode.DataFeed into a
generator) are Keras 2 scripts: tfos.compat runs them under tf-keras (driver and nodes) with
MultiWorkerMirroredStrategy on local-cluster[2,1,1024]; mnist_tf.py keeps weights-only
checkpoints, and both export with compat.export_saved_model. Checked: the run ends with exit
code 0, the checkpoints and the SavedModel are tf-keras's, the SavedModel classifies the
digits, and the non-chief's temporary copy is gone.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile

import pytest

from tests.integration.spark_helpers import wait_no_node_processes
from tests.integration.test_submit import run as run_killing_on_timeout

pytestmark = pytest.mark.integration

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "compat_scripts")


def spark_submit() -> str:
    import pyspark

    return os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")


def submit(script: str, args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    """spark-submit ``script`` on local-cluster[2,1,1024] with the conf tfos needs; killed on timeout."""
    return run_killing_on_timeout([
        spark_submit(), "--master", "local-cluster[2,1,1024]",
        "--conf", "spark.executor.instances=2", "--conf", "spark.task.cpus=1",
        "--conf", "spark.dynamicAllocation.enabled=false", "--conf", "spark.task.maxFailures=1",
        "--conf", "spark.stage.maxConsecutiveAttempts=1", "--conf", "spark.ui.enabled=false",
        "--conf", "spark.ui.showConsoleProgress=false", "--conf", "spark.driver.host=127.0.0.1",
        "--conf", f"spark.pyspark.python={sys.executable}", "--conf", f"spark.pyspark.driver.python={sys.executable}",
        "--conf", "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL=2", "--conf", "spark.executorEnv.CUDA_VISIBLE_DEVICES=",
        os.path.join(SCRIPTS, script), *args,
    ], timeout_s)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """scikit-learn's 8x8 digits as a CSV of ``label,p0..p63`` rows, and the arrays."""
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    path = tmp_path_factory.mktemp("digits") / "digits.csv"
    table = np.column_stack([data.target, data.data]).astype(np.int64)
    np.savetxt(path, table, delimiter=",", fmt="%d")
    return str(path), data.data.astype(np.float32) / 16.0, data.target


def accuracy_of_export(export_dir: str, images, labels) -> float:
    import numpy as np
    import tensorflow as tf

    served = tf.saved_model.load(export_dir)
    if hasattr(served, "serve"):  # Keras 3's model.export
        probabilities = served.serve(tf.constant(images)).numpy()
    else:  # tf-keras's model.save(dir, save_format="tf")
        signature = served.signatures["serving_default"]
        (name,) = signature.structured_input_signature[1]
        (probabilities,) = [t.numpy() for t in signature(**{name: tf.constant(images)}).values()]
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def worker_temp_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "tfos-worker-model-*")))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("script, mode", [
    # CI time: ~50 s; the compat layer is covered by tests/unit/test_compat in the default run
    pytest.param("mnist_tf.py", "tensorflow", marks=pytest.mark.slow),
    # ~50 s more; the SPARK-mode DataFeed path is covered by test_feed and tests/unit/test_compat
    pytest.param("mnist_spark.py", "spark", marks=pytest.mark.slow),
])
def test_tensorflowonspark_style_script_trains_and_exports_a_model(script, mode, digits, tmp_path):
    csv, images, labels = digits
    export_dir = tmp_path / "export"
    before = worker_temp_dirs()

    model_dir = tmp_path / "model"
    result = submit(script, ["--images_labels", f"file://{csv}", "--export_dir", str(export_dir),
                             "--model_dir", str(model_dir), "--epochs", "3", "--batch_size", "64"],
                    timeout_s=220)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert f"COMPAT DONE {mode}" in result.stdout
    assert "driver tf.keras: tf_keras\n" in result.stdout  # tfos.compat chose tf-keras on the driver
    assert os.path.isfile(export_dir / "keras_metadata.pb")  # a tf-keras SavedModel: the nodes' Keras
    if mode == "tensorflow":  # Keras 2's weights-only checkpoints, refused by Keras 3
        assert os.path.isfile(model_dir / "weights-0003.index"), sorted(os.listdir(tmp_path))
    if mode == "tensorflow":  # cluster_info as TensorFlowOnSpark's dicts
        assert "nodes: [('chief', 0), ('worker', 0)]" in result.stdout
    assert os.path.isfile(export_dir / "saved_model.pb"), sorted(os.listdir(tmp_path))
    assert accuracy_of_export(str(export_dir), images, labels) > 0.8  # untrained: ~0.1
    assert worker_temp_dirs() - before == set()  # the non-chief's copy was removed
    assert wait_no_node_processes() == []
