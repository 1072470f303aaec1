"""spark.tfos.* keys that `tfos submit` sets, read back as tfos.run defaults."""

from __future__ import annotations

import pytest

from tfos.errors import ConfigError
from tfos.submit_conf import defaults_from_conf

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("conf,expected", [
    ({}, {}),
    ({"spark.tfos.clusterSize": "3"}, {"num_executors": 3}),
    ({"spark.tfos.clusterSize": "2", "spark.tfos.keras": "tf_keras"}, {"num_executors": 2, "keras": "tf_keras"}),
    ({"spark.tfos.keras": "keras3"}, {"keras": "keras3"}),
    ({"spark.tfos.clusterSize": ""}, {}),
])
def test_defaults_from_conf_reads_what_submit_set(conf, expected):
    assert defaults_from_conf(conf) == expected


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
])
def test_defaults_from_conf_refuses_unusable_values(conf, message):
    with pytest.raises(ConfigError) as err:
        defaults_from_conf(conf)
    assert str(err.value) == message
