"""Every spark.tfos.* key, read back as tfos.run options (what `tfos submit`, spark-defaults.conf
or a session builder set), and the deployment guide lists each one."""

from __future__ import annotations

import json
import logging
import pathlib
import re

import pytest

from tests.unit.certs import self_signed
from tfos.errors import ConfigError
from tfos.net import PortRange
from tfos.reservation.tls import TLSConfig
from tfos.spark.app import ConnectApp
from tfos.spark.conf import KEYS, conf_from_environment, run_options

pytestmark = pytest.mark.timeout(30)
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("conf,expected", [
    ({}, {}),
    ({"spark.tfos.clusterSize": "3"}, {"num_executors": 3}),
    ({"spark.tfos.clusterSize": "2", "spark.tfos.keras": "tf_keras"}, {"num_executors": 2, "keras": "tf_keras"}),
    ({"spark.tfos.keras": "keras3"}, {"keras": "keras3"}),
    ({"spark.tfos.clusterSize": ""}, {}),
    ({"spark.tfos.storage": "s3://b/runs"}, {"storage": "s3://b/runs"}),
    ({"spark.tfos.portRange": "41000-41010"}, {"port_range": PortRange(41000, 41010)}),
    ({"spark.tfos.sparkSecurity": " Require "}, {"spark_security": "require"}),
    ({"spark.tfos.env": '{"A": "1", "B": "x=y"}'}, {"env": {"A": "1", "B": "x=y"}}),
    ({"spark.tfos.env": ""}, {}),
])
def test_run_options_reads_each_key(conf, expected):
    assert run_options(conf.get) == expected


def test_tls_comes_from_the_conf_and_needs_both_files(tmp_path):
    cert, key = self_signed(str(tmp_path), "127.0.0.1")
    conf = {"spark.tfos.tls.certFile": cert, "spark.tfos.tls.keyFile": key,
            "spark.tfos.tls.serverName": "driver.tfos.test", "spark.tfos.portRange": "41000"}
    assert run_options(conf.get) == {"tls": TLSConfig(cert, key, None, "driver.tfos.test"),
                                     "port_range": PortRange(41000, 41000)}
    with pytest.raises(ConfigError) as info:
        run_options({"spark.tfos.tls.certFile": cert}.get)
    assert str(info.value) == (f"spark.tfos.tls.certFile and spark.tfos.tls.keyFile go together; received: "
                               f"spark.tfos.tls.certFile={cert!r}, spark.tfos.tls.keyFile=None")


@pytest.mark.parametrize("conf,message", [
    ({"spark.tfos.clusterSize": "two"},
     "spark.tfos.clusterSize must be a whole number >= 1 (tfos submit --cluster-size); "
     "received: spark.tfos.clusterSize='two'"),
    ({"spark.tfos.clusterSize": "0"},
     "spark.tfos.clusterSize must be a whole number >= 1 (tfos submit --cluster-size); "
     "received: spark.tfos.clusterSize='0'"),
    ({"spark.tfos.keras": "keras2"},
     "spark.tfos.keras must be one of auto, keras3, tf_keras (tfos submit --keras); "
     "received: spark.tfos.keras='keras2'"),
    ({"spark.tfos.env": '{"SECRET": 5}'},
     "spark.tfos.env must be a JSON object of environment variable names to strings "
     "(tfos submit --remote --env NAME=VALUE); these are not strings: SECRET"),
    ({"spark.tfos.env": "A=1"},
     "spark.tfos.env must be a JSON object of environment variable names to strings "
     "(tfos submit --remote --env NAME=VALUE); received text that is not JSON (Expecting value: line 1 "
     "column 1 (char 0))"),
    ({"spark.tfos.portRange": "41000..41010"},
     "spark.tfos.portRange must be a string 'FIRST-LAST' such as '40000-40100'; received: '41000..41010'"),
    ({"spark.tfos.portRange": "41010-41000"},
     "spark.tfos.portRange must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535; received: '41010-41000'"),
])
def test_unusable_values_are_refused_naming_the_key(conf, message):
    with pytest.raises(ConfigError) as err:
        run_options(conf.get)
    assert str(err.value) == message


def test_every_key_is_in_the_deployment_guide_and_no_other_is_read():
    guide = (ROOT / "docs" / "deployment.md").read_text()
    assert [k for k in KEYS if f"`{k}`" not in guide] == []
    read = set()
    for path in (ROOT / "tfos").rglob("*.py"):
        read |= set(re.findall(r"[\"'](spark\.tfos\.[\w.]+)[\"']", path.read_text()))
    assert read == set(KEYS), "a spark.tfos.* key outside tfos/spark/conf.py's KEYS"


# ------------------------------------------------ TFOS_CONF: tfos submit --remote's settings


NOT_A_CONF = ("TFOS_CONF must be a JSON object of spark.tfos.* keys to strings (tfos submit --remote "
              "sets it); ")


@pytest.mark.parametrize("value,message", [
    ("[1]", NOT_A_CONF + "received a JSON list"),
    ('{"spark.tfos.env": "{\\"TOKEN\\": \\"s3cret\\"}", x',
     NOT_A_CONF + "received text that is not JSON (Expecting property name enclosed in double quotes: "
                  "line 1 column 47 (char 46))"),
    ('{"spark.tfos.clusterSize": 2, "spark.tfos.storage": "s3cret"}',
     NOT_A_CONF + "these are not strings: spark.tfos.clusterSize"),
    ('{"spark.executor.cores": "s3cret", "spark.tfos.keras": "keras3"}',
     "TFOS_CONF holds only spark.tfos.* keys; received: spark.executor.cores"),
])
def test_tfos_conf_that_cannot_be_read_is_refused_without_its_values(value, message):
    with pytest.raises(ConfigError) as err:
        conf_from_environment({"TFOS_CONF": value})
    assert str(err.value) == message
    assert "s3cret" not in str(err.value)


def test_tfos_conf_unset_or_empty_is_no_settings(monkeypatch):
    assert conf_from_environment({}) == {} and conf_from_environment({"TFOS_CONF": ""}) == {}
    monkeypatch.setenv("TFOS_CONF", '{"spark.tfos.clusterSize": "3"}')
    assert conf_from_environment() == {"spark.tfos.clusterSize": "3"}  # os.environ by default


class FakeConnectConf:
    """A Connect session's ``spark.conf``: a dict, and keys the server will not show."""

    def __init__(self, values, hidden=()):
        self.values, self.hidden = values, hidden

    def get(self, key, default=None):
        if key in self.hidden:
            raise RuntimeError(f"[CANNOT_MODIFY_CONFIG] {key}")
        return self.values.get(key, default)


class FakeConnectSession:
    def __init__(self, values, hidden=()):
        self.conf = FakeConnectConf(values, hidden)


def connect_app(monkeypatch, session_conf, tfos_conf, hidden=()):
    monkeypatch.setenv("TFOS_CONF", json.dumps(tfos_conf))
    return ConnectApp(FakeConnectSession(session_conf, hidden))


def test_a_connect_session_falls_back_on_tfos_conf_for_spark_tfos_keys_only(monkeypatch, caplog):
    app = connect_app(monkeypatch, {"spark.executor.instances": "2"},
                      {"spark.tfos.clusterSize": "2", "spark.tfos.keras": "tf_keras",
                       "spark.tfos.env": '{"A": "1"}'}, hidden={"spark.tfos.keras"})
    with caplog.at_level(logging.WARNING, logger="tfos"):
        assert app.get("spark.tfos.clusterSize") == "2"
        assert app.get("spark.tfos.keras") == "tf_keras"  # the server would not show it
        assert app.get("spark.tfos.storage", "none") == "none"
        assert app.get("spark.executor.instances") == "2"
        assert run_options(app.get) == {"num_executors": 2, "keras": "tf_keras", "env": {"A": "1"}}
    assert caplog.records == []


def test_a_connect_sessions_own_value_wins_over_tfos_conf_with_a_warning(monkeypatch, caplog):
    app = connect_app(monkeypatch, {"spark.tfos.clusterSize": "4", "spark.tfos.keras": "keras3"},
                      {"spark.tfos.clusterSize": "2", "spark.tfos.keras": "keras3"})
    with caplog.at_level(logging.WARNING, logger="tfos"):
        assert app.get("spark.tfos.clusterSize") == "4"
        assert app.get("spark.tfos.keras") == "keras3"  # the same value: no warning
    assert [r.getMessage() for r in caplog.records] == [
        "spark.tfos.clusterSize: the Spark Connect session's value wins over the one in TFOS_CONF "
        "(tfos submit); the session has it from the server's conf or the script"]


def test_a_connect_session_with_an_unreadable_tfos_conf_refuses_its_keys(monkeypatch):
    monkeypatch.setenv("TFOS_CONF", "[1]")
    app = ConnectApp(FakeConnectSession({"spark.executor.instances": "2"}))
    assert app.get("spark.executor.instances") == "2"  # not a tfos key: TFOS_CONF unread
    with pytest.raises(ConfigError) as err:
        app.get("spark.tfos.clusterSize")
    assert str(err.value) == NOT_A_CONF + "received a JSON list"
