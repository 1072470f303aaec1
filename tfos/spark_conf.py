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
====================================  =====================================================
"""

from __future__ import annotations

from typing import Any

from tfos.errors import ConfigError

CLUSTER_SIZE_KEY = "spark.tfos.clusterSize"
KERAS_KEY = "spark.tfos.keras"
STORAGE_KEY = "spark.tfos.storage"
PORT_RANGE_KEY = "spark.tfos.portRange"
TLS_CERT_KEY = "spark.tfos.tls.certFile"
TLS_KEY_KEY = "spark.tfos.tls.keyFile"
TLS_CA_KEY = "spark.tfos.tls.caFile"
TLS_SERVER_NAME_KEY = "spark.tfos.tls.serverName"
SPARK_SECURITY_KEY = "spark.tfos.sparkSecurity"

#: every key, in the order of the table above
KEYS = (CLUSTER_SIZE_KEY, KERAS_KEY, STORAGE_KEY, PORT_RANGE_KEY, TLS_CERT_KEY, TLS_KEY_KEY, TLS_CA_KEY,
        TLS_SERVER_NAME_KEY, SPARK_SECURITY_KEY)


def run_options(get) -> dict[str, Any]:
    """``tfos.run`` keyword options set in a Spark conf (``get(key, default)``, e.g.
    ``sc.getConf().get``); only the keys that are set. Never blocks.

    Raises:
        ConfigError: a key holds a value ``tfos.run`` cannot use; the message names the key.
    """
    from tfos.keras_compat import check_keras_choice
    from tfos.ports import PortRange

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
        options["port_range"] = PortRange.parse(port_range)
    storage = get(STORAGE_KEY, None)
    if storage:
        options["storage"] = storage
    security = get(SPARK_SECURITY_KEY, None)
    if security:
        options["spark_security"] = security.strip().lower()
    return options


def tls_from_conf(get):
    """A :class:`~tfos.tls.TLSConfig` from ``spark.tfos.tls.*``, or ``None`` when unset.

    Raises:
        ConfigError: when only one of the certificate and the key is set.
    """
    from tfos.tls import TLSConfig

    cert, key = get(TLS_CERT_KEY, None), get(TLS_KEY_KEY, None)
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError(f"{TLS_CERT_KEY} and {TLS_KEY_KEY} go together; received: {TLS_CERT_KEY}={cert!r}, "
                          f"{TLS_KEY_KEY}={key!r}")
    return TLSConfig(cert, key, get(TLS_CA_KEY, None) or None, get(TLS_SERVER_NAME_KEY, None) or None)


__all__ = ["CLUSTER_SIZE_KEY", "KERAS_KEY", "KEYS", "PORT_RANGE_KEY", "SPARK_SECURITY_KEY", "STORAGE_KEY",
           "TLS_CA_KEY", "TLS_CERT_KEY", "TLS_KEY_KEY", "TLS_SERVER_NAME_KEY", "run_options", "tls_from_conf"]
