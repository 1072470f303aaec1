"""The environment of tfos's children: every Spark secret goes, the user's stay, Spark's GPUs
map through the executor's CUDA_VISIBLE_DEVICES, and the run's env= wins over the executor's."""

from __future__ import annotations

import pytest

from tfos.errors import ConfigError
from tfos.node.child_env import child_environment, is_spark_secret, without_spark_secrets


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


#: the executor's environment, as a Python worker has it: pyspark's OMP_NUM_THREADS and Spark's secret
_EXECUTOR = {"PATH": "/usr/bin", "OMP_NUM_THREADS": "1", "_SPARK_AUTH_SECRET": "s"}
_NO_ENV: dict[str, str] = {}
_USER_CUDA = {"CUDA_VISIBLE_DEVICES": "4,5"}
_USER_OMP = {"OMP_NUM_THREADS": "8"}
_UNSET = None  # no such variable in the environment


@pytest.mark.parametrize(("existing", "user_env", "gpus", "cuda", "omp"), [
    # executor's CUDA_VISIBLE_DEVICES, the run's env=, Spark's GPUs -> the child's CUDA_VISIBLE_DEVICES, OMP
    (_UNSET, _NO_ENV, [], _UNSET, _UNSET),
    (_UNSET, _NO_ENV, ["0"], "0", _UNSET),
    (_UNSET, _NO_ENV, ["1"], "1", _UNSET),
    (_UNSET, _USER_CUDA, [], "4,5", _UNSET),       # no GPU scheduling: the user's value stands
    (_UNSET, _USER_CUDA, ["0"], "4", _UNSET),      # Spark's address indexes the user's list
    (_UNSET, _USER_CUDA, ["1"], "5", _UNSET),
    (_UNSET, _USER_OMP, [], _UNSET, "8"),          # the user's OMP_NUM_THREADS is kept
    (_UNSET, _USER_OMP, ["0"], "0", "8"),
    (_UNSET, _USER_OMP, ["1"], "1", "8"),
    ("2,3", _NO_ENV, [], "2,3", _UNSET),
    ("2,3", _NO_ENV, ["0"], "2", _UNSET),          # the wrong-GPU case: index 0 of the executor's 2,3
    ("2,3", _NO_ENV, ["1"], "3", _UNSET),
    ("2,3", _USER_CUDA, [], "4,5", _UNSET),        # the user's value replaces the executor's
    ("2,3", _USER_CUDA, ["0"], "4", _UNSET),
    ("2,3", _USER_CUDA, ["1"], "5", _UNSET),
    ("2,3", _USER_OMP, [], "2,3", "8"),
    ("2,3", _USER_OMP, ["0"], "2", "8"),
    ("2,3", _USER_OMP, ["1"], "3", "8"),
    ("", _NO_ENV, [], "", _UNSET),
    ("", _NO_ENV, ["0"], "0", _UNSET),             # an empty list narrows nothing: the address as is
    ("", _NO_ENV, ["1"], "1", _UNSET),
    ("", _USER_CUDA, [], "4,5", _UNSET),
    ("", _USER_CUDA, ["0"], "4", _UNSET),
    ("", _USER_CUDA, ["1"], "5", _UNSET),
    ("", _USER_OMP, [], "", "8"),
    ("", _USER_OMP, ["0"], "0", "8"),
    ("", _USER_OMP, ["1"], "1", "8"),
])
def test_child_environment_layers_gpus_and_the_users_env_over_the_executors(existing, user_env, gpus, cuda, omp):
    parent = dict(_EXECUTOR) if existing is None else {**_EXECUTOR, "CUDA_VISIBLE_DEVICES": existing}
    before = dict(parent)
    env = child_environment(parent, keep_omp_num_threads=False, user_env=user_env, gpus=gpus,
                            python_path=["/site"])
    expected = {"PATH": "/usr/bin", "PYTHONPATH": "/site", "PYTHONUNBUFFERED": "1"}
    if cuda is not None:
        expected["CUDA_VISIBLE_DEVICES"] = cuda
    if omp is not None:
        expected["OMP_NUM_THREADS"] = omp
    assert env == expected
    assert parent == before


@pytest.mark.parametrize("existing", [_UNSET, "2,3", ""])
@pytest.mark.parametrize("user_env", [_NO_ENV, _USER_CUDA])
def test_a_child_that_needs_no_gpu_sees_none_whatever_the_executor_and_env_say(existing, user_env):
    parent = dict(_EXECUTOR) if existing is None else {**_EXECUTOR, "CUDA_VISIBLE_DEVICES": existing}
    env = child_environment(parent, keep_omp_num_threads=False, user_env=user_env, no_gpu=True)
    assert env["CUDA_VISIBLE_DEVICES"] == "-1"


def test_omp_num_threads_the_user_set_in_the_spark_conf_is_kept():
    env = child_environment(_EXECUTOR, keep_omp_num_threads=True, python_path=[])
    assert env["OMP_NUM_THREADS"] == "1"


def test_a_variable_named_in_env_reaches_the_child_whatever_its_name():
    env = child_environment(_EXECUTOR, keep_omp_num_threads=False, user_env={"_SPARK_AUTH_SECRET": "mine"},
                            python_path=[])
    assert env["_SPARK_AUTH_SECRET"] == "mine"


def test_the_users_pythonpath_comes_first_and_the_workers_path_follows_without_repeats():
    env = child_environment({}, keep_omp_num_threads=False, user_env={"PYTHONPATH": "/mine:/site"},
                            python_path=["", "/site", "/stdlib", "/site"])
    assert env["PYTHONPATH"] == "/mine:/site:/stdlib"


def test_tf_config_is_tfos_own_and_never_inherited_or_passed_through():
    env = child_environment({"TF_CONFIG": "{}"}, keep_omp_num_threads=False, user_env={"TF_CONFIG": "{}"},
                            python_path=[])
    assert "TF_CONFIG" not in env


def test_gpus_that_do_not_fit_the_executors_list_are_refused_with_the_reason():
    with pytest.raises(ConfigError) as err:
        child_environment({"CUDA_VISIBLE_DEVICES": "2,3"}, keep_omp_num_threads=False, gpus=["5"], python_path=[])
    assert str(err.value) == (
        "Spark assigned GPU 5 to this node, but the executor's CUDA_VISIBLE_DEVICES='2,3' has no such GPU "
        "(neither an entry nor an index into it): make the GPU discovery script report the GPUs this "
        "executor can see")
