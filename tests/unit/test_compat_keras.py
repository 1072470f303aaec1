"""tfos.compat's Keras rule: tf-keras for ported TensorFlowOnSpark scripts unless they chose."""

from __future__ import annotations

import pytest

from tfos.compat.keras_default import keras_option, prefer_tf_keras_on_the_driver

pytestmark = pytest.mark.timeout(30)


class FakeContext:
    """What keras_option reads of a SparkContext: its conf."""

    def __init__(self, conf: dict):
        self._conf = conf

    def getConf(self):  # noqa: N802
        return self

    def get(self, key, default=None):
        return self._conf.get(key, default)


@pytest.mark.parametrize(("driver_env", "conf", "options", "expected"), [
    pytest.param("1", {}, {}, "tf_keras", id="compat's default: tf-keras"),
    pytest.param("0", {}, {}, "keras3", id="the driver chose Keras 3 before importing compat"),
    pytest.param("1", {}, {"keras": "keras3"}, "keras3", id="keras= wins"),
    pytest.param("1", {}, {"env": {"TF_USE_LEGACY_KERAS": "0"}}, "auto", id="env= decides on the nodes"),
    pytest.param("1", {"spark.executorEnv.TF_USE_LEGACY_KERAS": "0"}, {}, "auto", id="executorEnv decides"),
    pytest.param("1", {"spark.tfos.keras": "keras3"}, {}, "keras3", id="tfos submit --keras"),
])
def test_a_compat_run_uses_tf_keras_unless_the_script_chose(monkeypatch, driver_env, conf, options, expected):
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", driver_env)
    assert keras_option(FakeContext(conf), options) == expected


def test_importing_compat_makes_the_driver_prefer_tf_keras_but_keeps_a_choice(monkeypatch):
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    prefer_tf_keras_on_the_driver()
    import os

    assert os.environ["TF_USE_LEGACY_KERAS"] == "1"
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "0")
    prefer_tf_keras_on_the_driver()
    assert os.environ["TF_USE_LEGACY_KERAS"] == "0"


def test_the_compat_estimator_passes_the_keras_choice_to_its_cluster(monkeypatch):
    from tfos.compat import pipeline

    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    assert pipeline.TFEstimator()._run_options(FakeContext({})) == {"keras": "tf_keras"}
    from tfos.pipeline import TFEstimator

    assert TFEstimator()._run_options(FakeContext({})) == {}
