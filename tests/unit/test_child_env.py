"""Which variables tfos keeps from its children: every Spark secret goes, the user's stay."""

from __future__ import annotations

import pytest

from tfos.node.child_env import is_spark_secret, without_spark_secrets


@pytest.mark.parametrize("name", [
    "_SPARK_AUTH_SECRET",  # spark.authenticate, set on executors by the standalone Worker
    "_SPARK_SSL_RPC_KEY_PASSWORD", "_SPARK_SSL_RPC_PRIVATE_KEY_PASSWORD",
    "_SPARK_SSL_RPC_KEY_STORE_PASSWORD", "_SPARK_SSL_RPC_TRUST_STORE_PASSWORD",
    "_SPARK_LAUNCHER_SECRET", "_PYSPARK_DRIVER_CONN_INFO_PATH",
    "PYTHON_WORKER_FACTORY_SECRET", "PYSPARK_GATEWAY_SECRET", "SPARK_CONNECT_AUTHENTICATE_TOKEN",
    "SPARK_SOME_FUTURE_SECRET", "PYSPARK_NEW_PASSWORD", "_spark_auth_secret",
])
def test_spark_secrets_are_dropped(name):
    assert is_spark_secret(name)


@pytest.mark.parametrize("name", [
    "AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_KEY", "HADOOP_TOKEN_FILE_LOCATION", "MY_PASSWORD",
    "SPARK_HOME", "SPARK_LOCAL_DIRS", "SPARK_LOCAL_IP", "SPARK_AUTH_SOCKET_TIMEOUT", "PYSPARK_PYTHON",
    "PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS",
])
def test_other_variables_stay(name):
    assert not is_spark_secret(name)


def test_without_spark_secrets_copies_the_rest():
    env = {"_SPARK_AUTH_SECRET": "s", "PYSPARK_GATEWAY_SECRET": "g", "SPARK_HOME": "/opt/spark",
           "AWS_SECRET_ACCESS_KEY": "k"}
    assert without_spark_secrets(env) == {"SPARK_HOME": "/opt/spark", "AWS_SECRET_ACCESS_KEY": "k"}
    assert "_SPARK_AUTH_SECRET" in env  # the parent's environment is untouched
