"""Packing ``main_fun`` and its args on the driver, unpacking them in a child."""

from __future__ import annotations

import threading

import pytest

from tfos.errors import ConfigError
from tfos.node import frames
from tfos.user_code import DYNAMIC, pack_main_fun, unpack_main_fun


def _add(args, ctx):
    return args["a"] + ctx


def test_a_packed_main_fun_comes_back_with_its_args_and_its_file_name():
    main_fun, args = unpack_main_fun(pack_main_fun(_add, {"a": 2}))
    assert (main_fun(args, 3), args) == (5, {"a": 2})
    assert main_fun.__code__.co_filename != DYNAMIC
    assert main_fun.__code__.co_filename.endswith("test_user_code.py")


def test_args_that_cannot_be_pickled_are_a_config_error_naming_the_cause():
    with pytest.raises(ConfigError) as info:
        pack_main_fun(_add, {"lock": threading.Lock()})
    assert str(info.value) == (
        "main_fun and its args must pickle to reach the executors, and they do not (TypeError: cannot pickle "
        "'_thread.lock' object); create locks, sockets, open files, models and the SparkContext or SparkSession "
        "inside main_fun instead of capturing or passing them")


def test_a_main_fun_whose_closure_cannot_be_pickled_is_a_config_error():
    lock = threading.Lock()

    def holds_a_lock(args, ctx):
        with lock:
            return args

    with pytest.raises(ConfigError, match=r"must pickle to reach the executors, and they do not \(TypeError"):
        pack_main_fun(holds_a_lock, None)


def test_args_over_what_a_child_takes_are_a_config_error_with_the_size(monkeypatch):
    monkeypatch.setattr(frames, "MAX_FRAME", 10_000)
    pack_main_fun(_add, b"x" * 5_000)  # under the limit: fine
    with pytest.raises(ConfigError) as info:
        pack_main_fun(_add, b"x" * 20_000)
    message = str(info.value)
    assert message.startswith("main_fun and its args pickle to 2"), message
    assert "bytes, more than the 10,000 tfos passes to each node; read big data inside main_fun" in message
