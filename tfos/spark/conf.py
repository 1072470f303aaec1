"""Every ``spark.tfos.*`` key, and the one reader that turns them into ``tfos.run`` options.

Set them with ``--conf`` (spark-submit, ``tfos submit``), in ``spark-defaults.conf``, or on
the SparkSession builder: a cluster's operator can fix TLS, a port range, the storage and
the security stance once, and every script run there gets them. Arguments given to
``tfos.run`` always win over the conf. docs/deployment.md lists the same table.

====================================  =====================================================
key                                   ``tfos.run`` option it sets when the call gives none
====================================  =====================================================
``spark.tfos.clusterSize``            ``num_executors`` (``tfos submit --cluster-size``)
``spark.tfos.keras``                  ``keras`` (``tfos submit --keras``)
``spark.tfos.storage``                ``storage`` (``tfos submit --storage``)
``spark.tfos.portRange``              ``port_range``
``spark.tfos.tls.certFile``           ``tls`` (with ``keyFile``; ``caFile``, ``serverName``)
``spark.tfos.sparkSecurity``          ``spark_security``: warn, require or ignore
``spark.tfos.env``                    ``env``, a JSON object (``tfos submit --remote --env``)
====================================  =====================================================

Over Spark Connect the script's session is a client of a server started earlier: no
``--conf`` of the command that runs the script reaches it (of those ``spark-submit
--remote`` forwards, pyspark's client applies only ``spark.sql.*`` ones). So ``tfos submit
--remote`` puts its ``spark.tfos.*`` settings in the ``TFOS_CONF`` environment variable (a
JSON object), and a Connect session's conf falls back on it for the keys it has no value
for (:func:`conf_from_environment`, read by ``tfos.spark.app.ConnectApp.get``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from tfos.errors import ConfigError
from tfos.net import PortRange

CLUSTER_SIZE_KEY = "spark.tfos.clusterSize"
KERAS_KEY = "spark.tfos.keras"
STORAGE_KEY = "spark.tfos.storage"
PORT_RANGE_KEY = "spark.tfos.portRange"
TLS_CERT_KEY = "spark.tfos.tls.certFile"
TLS_KEY_KEY = "spark.tfos.tls.keyFile"
TLS_CA_KEY = "spark.tfos.tls.caFile"
TLS_SERVER_NAME_KEY = "spark.tfos.tls.serverName"
SPARK_SECURITY_KEY = "spark.tfos.sparkSecurity"
ENV_KEY = "spark.tfos.env"

#: every key, in the order of the table above
KEYS = (CLUSTER_SIZE_KEY, KERAS_KEY, STORAGE_KEY, PORT_RANGE_KEY, TLS_CERT_KEY, TLS_KEY_KEY, TLS_CA_KEY,
        TLS_SERVER_NAME_KEY, SPARK_SECURITY_KEY, ENV_KEY)
#: what every key starts with
KEY_PREFIX = "spark.tfos."
#: the environment variable with ``spark.tfos.*`` settings for a Spark Connect session
CONF_VAR = "TFOS_CONF"


def run_options(get) -> dict[str, Any]:
    """``tfos.run`` keyword options set in a Spark conf (``get(key, default)``, e.g.
    ``sc.getConf().get``); only the keys that are set. Never blocks.

    Raises:
        ConfigError: a key holds a value ``tfos.run`` cannot use; the message names the key.
    """
    from tfos.keras_compat import check_keras_choice

    options: dict[str, Any] = {}
    size = get(CLUSTER_SIZE_KEY, None)
    if size not in (None, ""):
        try:
            options["num_executors"] = int(size)
        except ValueError:
            options["num_executors"] = 0
        if options["num_executors"] < 1:
            raise ConfigError(f"{CLUSTER_SIZE_KEY} must be a whole number >= 1 (tfos submit --cluster-size); "
                              f"received: {CLUSTER_SIZE_KEY}={size!r}")
    keras = get(KERAS_KEY, None)
    if keras not in (None, ""):
        check_keras_choice(keras, KERAS_KEY, "tfos submit --keras")
        options["keras"] = keras
    tls = tls_from_conf(get)
    if tls is not None:
        options["tls"] = tls
    port_range = get(PORT_RANGE_KEY, None)
    if port_range:
        options["port_range"] = PortRange.parse(port_range, PORT_RANGE_KEY)
    storage = get(STORAGE_KEY, None)
    if storage:
        options["storage"] = storage
    security = get(SPARK_SECURITY_KEY, None)
    if security:
        options["spark_security"] = security.strip().lower()
    env = get(ENV_KEY, None)
    if env:
        options["env"] = _string_map(env, f"{ENV_KEY} must be a JSON object of environment variable "
                                          f"names to strings (tfos submit --remote --env NAME=VALUE)")
    return options


def conf_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``spark.tfos.*`` settings in ``TFOS_CONF`` (``{}`` when unset).

    ``tfos submit --remote`` sets it: a Spark Connect client session cannot receive the
    command line's ``--conf`` values, so its conf falls back on these (only for
    ``spark.tfos.*`` keys: no other Spark setting can be changed from here).

    Raises:
        ConfigError: not a JSON object of ``spark.tfos.*`` keys to strings. The value is
            not shown: ``spark.tfos.env`` may hold credentials.
    """
    raw = (os.environ if environ is None else environ).get(CONF_VAR)
    if not raw:
        return {}
    conf = _string_map(raw, f"{CONF_VAR} must be a JSON object of {KEY_PREFIX}* keys to strings "
                            f"(tfos submit --remote sets it)")
    other = sorted(k for k in conf if not k.startswith(KEY_PREFIX))
    if other:
        raise ConfigError(f"{CONF_VAR} holds only {KEY_PREFIX}* keys; received: {', '.join(other)}")
    return conf


def _string_map(raw: str, what: str) -> dict[str, str]:
    """A JSON object of strings to strings, or ConfigError(``what``) saying why not (never the
    value itself)."""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{what}; received text that is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what}; received a JSON {type(value).__name__}")
    bad = sorted(str(k) for k, v in value.items() if not isinstance(v, str))
    if bad:
        raise ConfigError(f"{what}; these are not strings: {', '.join(bad)}")
    return value


def tls_from_conf(get):
    """A :class:`~tfos.reservation.tls.TLSConfig` from ``spark.tfos.tls.*``, or ``None`` when unset.

    Raises:
        ConfigError: when only one of the certificate and the key is set.
    """
    from tfos.reservation.tls import TLSConfig

    cert, key = get(TLS_CERT_KEY, None), get(TLS_KEY_KEY, None)
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError(f"{TLS_CERT_KEY} and {TLS_KEY_KEY} go together; received: {TLS_CERT_KEY}={cert!r}, "
                          f"{TLS_KEY_KEY}={key!r}")
    return TLSConfig(cert, key, get(TLS_CA_KEY, None) or None, get(TLS_SERVER_NAME_KEY, None) or None)


__all__ = ["CLUSTER_SIZE_KEY", "CONF_VAR", "ENV_KEY", "KERAS_KEY", "KEYS", "KEY_PREFIX", "PORT_RANGE_KEY",
           "SPARK_SECURITY_KEY", "STORAGE_KEY", "TLS_CA_KEY", "TLS_CERT_KEY", "TLS_KEY_KEY", "TLS_SERVER_NAME_KEY",
           "conf_from_environment", "run_options", "tls_from_conf"]
