"""Every spark.tfos.* key, read back as tfos.run options (what `tfos submit`, spark-defaults.conf
or a session builder set), and the deployment guide lists each one."""

from __future__ import annotations

import pathlib
import re

import pytest

from tests.unit.certs import self_signed
from tfos.errors import ConfigError
from tfos.ports import PortRange
from tfos.spark_conf import KEYS, run_options
from tfos.tls import TLSConfig

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
    ({"spark.tfos.portRange": "41000..41010"},
     "port_range must be a string 'FIRST-LAST' such as '40000-40100' (set it with tfos.run(port_range=...) or "
     "spark.tfos.portRange); received: '41000..41010'"),
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
    assert read == set(KEYS), "a spark.tfos.* key outside tfos/spark_conf.py's KEYS"
