"""RunConfig validation: every bad argument fails at the edge with the whole message checked."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from tfos.config import DEFAULT_SHUTDOWN_TIMEOUT_S, RunConfig
from tfos.errors import ConfigError, TfosError
from tfos.input_mode import InputMode
from tfos.roles import Role

pytestmark = pytest.mark.timeout(60)

INF, NAN = math.inf, math.nan

BAD_CONFIGS = [
    # (id, kwargs, whole error message)
    ("zero_executors", dict(num_executors=0),
     "num_executors must be >= 1; received: num_executors=0"),
    ("negative_executors", dict(num_executors=-3),
     "num_executors must be >= 1; received: num_executors=-3"),
    ("executors_as_string", dict(num_executors="2"),
     "num_executors must be an int; received: num_executors='2'"),
    ("executors_as_bool", dict(num_executors=True),
     "num_executors must be an int; received: num_executors=True"),
    ("executors_as_float", dict(num_executors=2.0),
     "num_executors must be an int; received: num_executors=2.0"),
    ("executors_none", dict(num_executors=None),
     "num_executors must be an int; received: num_executors=None"),
    ("negative_ps", dict(num_executors=2, num_ps=-1),
     "num_ps must be >= 0; received: num_ps=-1"),
    ("fractional_ps", dict(num_executors=2, num_ps=1.5),
     "num_ps must be an int; received: num_ps=1.5"),
    ("ps_as_bool", dict(num_executors=2, num_ps=False),
     "num_ps must be an int; received: num_ps=False"),
    ("unknown_master_node", dict(num_executors=2, master_node="boss"),
     "master_node must be 'chief', 'master' or None; received: master_node='boss'"),
    ("empty_master_node", dict(num_executors=2, master_node=""),
     "master_node must be 'chief', 'master' or None; received: master_node=''"),
    ("worker_as_master_node", dict(num_executors=2, master_node="worker"),
     "master_node must be 'chief', 'master' or None; received: master_node='worker'"),
    ("keras_with_dash", dict(num_executors=2, keras="tf-keras"),
     "keras must be one of auto, keras3, tf_keras; received: keras='tf-keras'"),
    ("keras_none", dict(num_executors=2, keras=None),
     "keras must be one of auto, keras3, tf_keras; received: keras=None"),
    ("infinite_reservation_timeout", dict(num_executors=2, reservation_timeout=INF),
     "reservation_timeout must be a finite number > 0 (seconds); received: reservation_timeout=inf"),
    ("nan_reservation_timeout", dict(num_executors=2, reservation_timeout=NAN),
     "reservation_timeout must be a finite number > 0 (seconds); received: reservation_timeout=nan"),
    ("zero_reservation_timeout", dict(num_executors=2, reservation_timeout=0),
     "reservation_timeout must be a finite number > 0 (seconds); received: reservation_timeout=0"),
    ("string_reservation_timeout", dict(num_executors=2, reservation_timeout="600"),
     "reservation_timeout must be a finite number > 0 (seconds); received: reservation_timeout='600'"),
    ("negative_executor_wait", dict(num_executors=2, executor_wait_timeout=-1),
     "executor_wait_timeout must be a finite number > 0 (seconds); received: executor_wait_timeout=-1"),
    ("negative_infinite_executor_wait", dict(num_executors=2, executor_wait_timeout=-INF),
     "executor_wait_timeout must be a finite number > 0 (seconds); received: executor_wait_timeout=-inf"),
    ("zero_heartbeat_interval", dict(num_executors=2, heartbeat_interval_s=0),
     "heartbeat_interval_s must be a finite number > 0 (seconds); received: heartbeat_interval_s=0"),
    ("infinite_heartbeat_timeout", dict(num_executors=2, heartbeat_timeout_s=INF),
     "heartbeat_timeout_s must be a finite number > 0 (seconds); received: heartbeat_timeout_s=inf"),
    ("negative_stop_grace", dict(num_executors=2, stop_grace_s=-0.5),
     "stop_grace_s must be a finite number >= 0 (seconds); received: stop_grace_s=-0.5"),
    ("bool_stop_grace", dict(num_executors=2, stop_grace_s=True),
     "stop_grace_s must be a finite number >= 0 (seconds); received: stop_grace_s=True"),
    ("nan_stop_grace", dict(num_executors=2, stop_grace_s=NAN),
     "stop_grace_s must be a finite number >= 0 (seconds); received: stop_grace_s=nan"),
    ("heartbeat_timeout_below_twice_interval",
     dict(num_executors=2, heartbeat_interval_s=2, heartbeat_timeout_s=3.9),
     "heartbeat_timeout_s must be at least twice heartbeat_interval_s; received: "
     "heartbeat_timeout_s=3.9, heartbeat_interval_s=2"),
    ("heartbeat_timeout_default_with_long_interval", dict(num_executors=2, heartbeat_interval_s=6.0),
     "heartbeat_timeout_s must be at least twice heartbeat_interval_s; received: "
     "heartbeat_timeout_s=10.0, heartbeat_interval_s=6.0"),
    ("no_worker_left_by_ps_chief_evaluator", dict(num_executors=2, num_ps=1, eval_node=True),
     "num_executors=2 is too small for num_ps=1, master_node='chief', eval_node=True: "
     "it leaves no node to train; use num_executors >= 3"),
    ("ps_only_without_chief", dict(num_executors=1, num_ps=1, master_node=None),
     "num_executors=1 is too small for num_ps=1, master_node=None, eval_node=False: "
     "it leaves no node to train; use num_executors >= 2"),
    ("evaluator_only_without_chief", dict(num_executors=1, master_node=None, eval_node=True),
     "num_executors=1 is too small for num_ps=0, master_node=None, eval_node=True: "
     "it leaves no node to train; use num_executors >= 2"),
    ("more_ps_than_executors", dict(num_executors=3, num_ps=3, master_node="master"),
     "num_executors=3 is too small for num_ps=3, master_node='master', eval_node=False: "
     "it leaves no node to train; use num_executors >= 4"),
    ("input_mode_int_out_of_range", dict(num_executors=2, input_mode=2),
     "input_mode must be tfos.InputMode.TENSORFLOW (0) or tfos.InputMode.SPARK (1); "
     "received: input_mode=2"),
    ("input_mode_negative_int", dict(num_executors=2, input_mode=-1),
     "input_mode must be tfos.InputMode.TENSORFLOW (0) or tfos.InputMode.SPARK (1); "
     "received: input_mode=-1"),
    ("input_mode_string", dict(num_executors=2, input_mode="spark"),
     "input_mode must be tfos.InputMode.TENSORFLOW or tfos.InputMode.SPARK; "
     "received: input_mode='spark'"),
    ("input_mode_bool", dict(num_executors=2, input_mode=True),
     "input_mode must be tfos.InputMode.TENSORFLOW or tfos.InputMode.SPARK; "
     "received: input_mode=True"),
    ("log_dir_not_a_string", dict(num_executors=2, log_dir=3),
     "log_dir must be a path string or None; received: log_dir=3"),
    ("env_value_not_a_string", dict(num_executors=2, env={"A": 1}),
     "env must map str to str; received: {'A': 1}"),
    ("env_none", dict(num_executors=2, env=None),
     "env must be a dict of str to str; received: env=None"),
    ("env_as_list_of_pairs", dict(num_executors=2, env=[("A", "1")]),
     "env must be a dict of str to str; received: env=[('A', '1')]"),
]


@pytest.mark.parametrize(
    ("kwargs", "message"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_argument_is_refused_with_the_value_and_what_is_expected(kwargs, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        RunConfig(**kwargs)


def test_config_error_belongs_to_the_tfos_family_and_is_a_value_error():
    with pytest.raises(TfosError) as info:
        RunConfig(num_executors=0)
    assert isinstance(info.value, ValueError)


GOOD_CONFIGS = [
    # (id, kwargs, expected roles as "job:index")
    ("one_chief", dict(num_executors=1), ["chief:0"]),
    ("chief_and_workers", dict(num_executors=3), ["chief:0", "worker:0", "worker:1"]),
    ("ps_chief_evaluator_worker", dict(num_executors=4, num_ps=1, eval_node=True),
     ["ps:0", "chief:0", "evaluator:0", "worker:0"]),
    ("master_instead_of_chief", dict(num_executors=2, master_node="master"), ["master:0", "worker:0"]),
    ("workers_only", dict(num_executors=2, master_node=None), ["worker:0", "worker:1"]),
    ("exactly_twice_the_interval", dict(num_executors=1, heartbeat_interval_s=2, heartbeat_timeout_s=4),
     ["chief:0"]),
    ("zero_stop_grace", dict(num_executors=1, stop_grace_s=0), ["chief:0"]),
    ("int_timeouts", dict(num_executors=1, reservation_timeout=5, executor_wait_timeout=1),
     ["chief:0"]),
]


@pytest.mark.parametrize(
    ("kwargs", "roles"), [c[1:] for c in GOOD_CONFIGS], ids=[c[0] for c in GOOD_CONFIGS]
)
def test_valid_config_keeps_its_values_and_plans_roles(kwargs, roles):
    config = RunConfig(**kwargs)
    for name, value in kwargs.items():
        assert getattr(config, name) == value
    assert [str(r) for r in config.roles()] == roles
    assert all(isinstance(r, Role) for r in config.roles())


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, InputMode.TENSORFLOW), (1, InputMode.SPARK), (InputMode.SPARK, InputMode.SPARK),
     (InputMode.TENSORFLOW, InputMode.TENSORFLOW)],
)
def test_input_mode_given_as_tensorflowonspark_int_becomes_the_enum(value, expected):
    config = RunConfig(num_executors=2, input_mode=value)
    assert config.input_mode is expected
    assert type(config.input_mode) is InputMode


def test_defaults_follow_tensorflowonspark():
    config = RunConfig(num_executors=2)
    assert (config.num_ps, config.tensorboard, config.input_mode, config.log_dir) == (
        0, False, InputMode.TENSORFLOW, None)
    assert (config.master_node, config.eval_node, config.reservation_timeout) == ("chief", False, 600.0)
    assert config.keras == "auto"
    assert config.env == {}
    assert DEFAULT_SHUTDOWN_TIMEOUT_S == 3 * 24 * 3600


def test_config_is_frozen():
    config = RunConfig(num_executors=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_executors = 3  # type: ignore[misc]


def test_replace_revalidates():
    config = RunConfig(num_executors=2)
    assert dataclasses.replace(config, input_mode=1).input_mode is InputMode.SPARK
    with pytest.raises(ConfigError, match="^" + re.escape("num_ps must be >= 0; received: num_ps=-2") + "$"):
        dataclasses.replace(config, num_ps=-2)


def test_env_dict_is_not_shared_between_configs():
    a, b = RunConfig(num_executors=1), RunConfig(num_executors=1)
    assert a.env == b.env == {}
    assert a.env is not b.env


def test_an_evaluator_cannot_be_fed_by_spark():
    from tfos.input_mode import InputMode

    with pytest.raises(ConfigError) as err:
        RunConfig(num_executors=3, eval_node=True, input_mode=InputMode.SPARK)
    assert str(err.value) == (
        "eval_node=True needs input_mode=tfos.InputMode.TENSORFLOW: an evaluator reads its own data "
        "and gets no Spark feed"
    )
