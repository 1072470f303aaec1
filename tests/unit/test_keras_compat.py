"""Tests for tfos.keras_compat.

The MWMS tests start two real worker processes (tests/unit/_mwms_fit_worker.py)
on 127.0.0.1 with TF_CONFIG; nothing in TensorFlow or Keras is mocked. Each
two-worker run takes about 5-10 s on 2 CPU cores.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tfos import keras_compat
from tfos.keras_compat import KERAS_BACKEND_CHOICES, configure_keras_backend

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_SCRIPT = Path(__file__).with_name("_mwms_fit_worker.py")
UPSTREAM_ERROR = "Attempt to convert a value (PerReplica"
WORKER_WAIT_S = 75


# --------------------------------------------------------------------------- helpers


def _installed_keras_minor() -> tuple[int, int] | None:
    """(major, minor) of the installed keras, read from metadata (no TF import)."""
    from importlib import metadata

    try:
        version = metadata.version("keras")
    except metadata.PackageNotFoundError:
        return None
    return keras_compat._parse_major_minor(version)


requires_tested_keras = pytest.mark.skipif(
    _installed_keras_minor() not in keras_compat._TESTED_KERAS_MINORS,
    reason="installed keras is outside the version range the MWMS fix is gated on",
)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env.update(configure_keras_backend("keras3"))
    env.update(
        {
            "CUDA_VISIBLE_DEVICES": "",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "KERAS_BACKEND": "tensorflow",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
    )
    env.update(extra or {})
    return env


def _run_mwms_workers(out_dir: Path, *worker_args: str) -> list[tuple[int, str]]:
    """Run 2 MWMS workers to completion; return [(returncode, log tail)] per task index."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    try:
        for index in range(2):
            tf_config = {
                "cluster": {"worker": workers},
                "task": {"type": "worker", "index": index},
            }
            log_path = out_dir / f"worker_{index}.log"
            logs.append(log_path)
            with open(log_path, "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(WORKER_SCRIPT), str(out_dir), *worker_args],
                        env=_child_env({"TF_CONFIG": json.dumps(tf_config)}),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=str(out_dir),
                    )
                )
        results = []
        for proc, log_path in zip(procs, logs, strict=True):
            try:
                returncode = proc.wait(timeout=WORKER_WAIT_S)
            except subprocess.TimeoutExpired:
                returncode = None
            tail = log_path.read_text(errors="replace")[-4000:]
            results.append((returncode, tail))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


# --------------------------------------------------------------------------- MWMS, real processes


@requires_tested_keras
@pytest.mark.timeout(150)
def test_patched_fit_evaluate_predict_on_two_mwms_workers(tmp_path):
    results = _run_mwms_workers(tmp_path, "--predict")
    for index, (returncode, tail) in enumerate(results):
        assert returncode == 0, f"worker {index} exited {returncode}:\n{tail}"

    r0, r1 = (np.load(tmp_path / f"result_{i}.npz") for i in range(2))
    weight_keys = sorted(k for k in r0.files if k.startswith("w"))
    assert weight_keys == ["w0", "w1", "w2", "w3"]  # two Dense layers: kernel + bias each
    for key in weight_keys:
        assert r0[key].shape == r1[key].shape
        assert np.allclose(r0[key], r1[key]), f"{key} differs between the workers"

    for r in (r0, r1):
        loss = r["loss"]
        assert loss.shape == (2,)
        assert np.all(np.isfinite(loss))
        assert loss[1] < loss[0], f"training loss did not decrease: {loss}"
        assert np.isfinite(r["eval_loss"])
        assert int(r["pred_rows"]) == 64  # predict gathers both workers' shards
    assert np.allclose(r0["loss"], r1["loss"])
    assert np.allclose(r0["eval_loss"], r1["eval_loss"])


@requires_tested_keras
@pytest.mark.timeout(150)
def test_unpatched_fit_fails_with_upstream_error(tmp_path):
    """Shows the patch is needed: without it Keras 3 fit fails on 2 MWMS workers (keras#20585)."""
    results = _run_mwms_workers(tmp_path, "--no-patch")
    for index, (returncode, tail) in enumerate(results):
        # 3 == _mwms_fit_worker.EXIT_FIT_FAILED: fit raised.
        assert returncode == 3, f"worker {index} exited {returncode}, expected 3:\n{tail}"
        error = (tmp_path / f"error_{index}.txt").read_text()
        assert error.startswith("ValueError: "), error
        assert UPSTREAM_ERROR in error, error
        assert not (tmp_path / f"result_{index}.npz").exists()


# --------------------------------------------------------------------------- patch mechanics


_IN_PROCESS_SCRIPT = r"""
import json
import numpy as np
import tensorflow as tf
from tfos.keras_compat import apply_keras3_mwms_fix
from keras.src.backend.tensorflow import trainer as t

orig_build = t.TensorFlowTrainer._maybe_symbolic_build
orig_reduce = t.reduce_per_replica
out = {"first": apply_keras3_mwms_fix()}
build1, reduce1 = t.TensorFlowTrainer._maybe_symbolic_build, t.reduce_per_replica
out["second"] = apply_keras3_mwms_fix()
out["patched"] = build1 is not orig_build and reduce1 is not orig_reduce
out["second_is_noop"] = (
    t.TensorFlowTrainer._maybe_symbolic_build is build1 and t.reduce_per_replica is reduce1
)
out["wraps_originals"] = (
    build1.__wrapped__ is orig_build and reduce1.__wrapped__ is orig_reduce
)

# Outside multi-worker MWMS the wrapper must give what the original gives.
values = {"loss": tf.constant(2.5), "vec": tf.constant([1.0, 3.0])}
same = []
for strategy in (
    tf.distribute.get_strategy(),
    tf.distribute.MirroredStrategy(["/cpu:0"]),
    tf.distribute.MultiWorkerMirroredStrategy(),  # no TF_CONFIG: single worker
):
    for reduction in ("auto", "mean", "sum", "first", "concat"):
        got = reduce1(values, strategy, reduction)
        want = orig_reduce(values, strategy, reduction)
        same.append(
            all(np.allclose(np.asarray(got[k]), np.asarray(want[k])) for k in values)
        )
out["delegates_outside_multi_worker"] = all(same)

# A single-process fit under a MirroredStrategy still works after patching.
import keras
with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
x = np.ones((8, 2), "float32")
hist = model.fit(x, x[:, :1], batch_size=4, epochs=1, verbose=0)
out["single_worker_fit_ok"] = bool(np.isfinite(hist.history["loss"][0]))
print("RESULT " + json.dumps(out))
"""


@requires_tested_keras
@pytest.mark.timeout(90)
def test_apply_is_idempotent_and_leaves_non_multi_worker_paths_alone(tmp_path):
    # Separate process: the patch is process-wide and must not leak into the
    # pytest process that runs other tests.
    proc = subprocess.run(
        [sys.executable, "-c", _IN_PROCESS_SCRIPT],
        env=_child_env(),
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(lines[-1][len("RESULT ") :]) == {
        "first": True,
        "second": True,
        "patched": True,
        "second_is_noop": True,
        "wraps_originals": True,
        "delegates_outside_multi_worker": True,
        "single_worker_fit_ok": True,
    }


@pytest.mark.timeout(60)
def test_apply_refuses_when_legacy_keras_selected(monkeypatch, caplog):
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    with caplog.at_level(logging.WARNING, logger="tfos.keras_compat"):
        assert keras_compat.apply_keras3_mwms_fix() is False
    assert "TF_USE_LEGACY_KERAS=1: tf.keras is tf-keras" in caplog.text


@pytest.mark.timeout(60)
def test_apply_refuses_when_keras_not_importable(monkeypatch, caplog):
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    monkeypatch.setitem(sys.modules, "keras", None)  # makes `import keras` raise ImportError
    with caplog.at_level(logging.WARNING, logger="tfos.keras_compat"):
        assert keras_compat.apply_keras3_mwms_fix() is False
    assert "keras is not importable" in caplog.text


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("version", "expected_log"),
    [
        ("3.99.0", "outside the versions the MWMS fix was tested with"),
        ("3.11.3", "outside the versions the MWMS fix was tested with"),
        ("2.15.0", "is not Keras 3"),
    ],
)
def test_apply_refuses_untested_keras_versions(monkeypatch, caplog, version, expected_log):
    keras = pytest.importorskip("keras")
    from keras.src.backend.tensorflow import trainer as tf_trainer

    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    monkeypatch.setattr(keras, "__version__", version)
    build_before = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    reduce_before = tf_trainer.reduce_per_replica
    with caplog.at_level(logging.WARNING, logger="tfos.keras_compat"):
        assert keras_compat.apply_keras3_mwms_fix() is False
    assert expected_log in caplog.text
    assert tf_trainer.TensorFlowTrainer._maybe_symbolic_build is build_before
    assert tf_trainer.reduce_per_replica is reduce_before


def test_tested_versions_cover_at_least_3_15():
    assert (3, 15) in keras_compat._TESTED_KERAS_MINORS
    assert all(major == 3 for major, _ in keras_compat._TESTED_KERAS_MINORS)


# --------------------------------------------------------------------------- configure_keras_backend


def test_configure_keras_backend_keras3():
    assert configure_keras_backend("keras3") == {"TF_USE_LEGACY_KERAS": "0"}


def test_configure_keras_backend_tf_keras():
    assert configure_keras_backend("tf_keras") == {"TF_USE_LEGACY_KERAS": "1"}


def test_configure_keras_backend_returns_fresh_dicts():
    first = configure_keras_backend("tf_keras")
    first["TF_USE_LEGACY_KERAS"] = "changed"
    assert configure_keras_backend("tf_keras") == {"TF_USE_LEGACY_KERAS": "1"}


def test_configure_keras_backend_choices():
    assert KERAS_BACKEND_CHOICES == ("keras3", "tf_keras")


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ("keras2", "Unknown Keras backend choice 'keras2'; expected one of 'keras3', 'tf_keras'"),
        ("Keras3", "Unknown Keras backend choice 'Keras3'; expected one of 'keras3', 'tf_keras'"),
        ("", "Unknown Keras backend choice ''; expected one of 'keras3', 'tf_keras'"),
        (None, "Unknown Keras backend choice None; expected one of 'keras3', 'tf_keras'"),
    ],
)
def test_configure_keras_backend_rejects_unknown(choice, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        configure_keras_backend(choice)


@pytest.mark.timeout(120)
# CI time: with Keras 3 selected ("0") the fix is what every Keras 3 MWMS fit of the default
# run (the examples, test_connect.py) needs to pass
@pytest.mark.parametrize("legacy", [pytest.param("0", marks=pytest.mark.slow), "1"])
def test_fix_is_applied_when_keras_is_first_imported_even_with_tf_keras_selected(legacy):
    code = textwrap.dedent("""
        import sys
        from tfos.keras_compat import apply_keras3_mwms_fix_on_import, _PATCH_MARKER
        apply_keras3_mwms_fix_on_import()
        assert "keras" not in sys.modules
        import keras
        from keras.src.backend.tensorflow import trainer
        print(getattr(trainer.reduce_per_replica, _PATCH_MARKER, False),
              getattr(trainer.TensorFlowTrainer._maybe_symbolic_build, _PATCH_MARKER, False))
    """)
    env = dict(os.environ, TF_USE_LEGACY_KERAS=legacy, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True True"
