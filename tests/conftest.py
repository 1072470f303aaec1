"""Shared test settings: loopback only, quiet TensorFlow."""

import os

os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

#: importing tfos.compat.TFCluster (or .pipeline) sets TF_USE_LEGACY_KERAS=1 for ported scripts;
#: test modules import it, which must not switch the rest of the session to tf-keras
_LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS")


def _restore_legacy_keras() -> None:
    if _LEGACY_KERAS is None:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = _LEGACY_KERAS


def pytest_collection_finish(session):
    _restore_legacy_keras()


def pytest_runtest_teardown(item, nextitem):
    _restore_legacy_keras()


def pytest_collection_modifyitems(session, config, items):
    """Run the integration modules on the default Spark application in a row, so they share
    one (tests/integration/spark_helpers.py: shared_spark): unit tests first, then modules
    that start Spark only in subprocesses, then those on the Spark Connect server, then the shared application's modules, then
    those with settings of their own (each starts its own application)."""

    def rank(item) -> float:
        module = item.module
        if "integration" not in module.__name__.split("."):
            return 0
        if "connect_server" in item.fixturenames:
            return 1.5  # one Spark Connect server for these (tests/integration/conftest.py)
        if not {"spark", "sc"} & set(item.fixturenames):
            return 1
        own = "spark" in vars(module) or hasattr(module, "SPARK_CONF") or getattr(module, "SPARK_EXECUTORS", 2) != 2
        return 3 if own else 2

    items.sort(key=rank)  # stable: each module's tests keep their order
