"""The environment tfos hands its executor-side processes: the parent's, minus Spark's secrets.

Spark puts its own credentials in the environment of every executor and Python worker
(``_SPARK_AUTH_SECRET`` for ``spark.authenticate``, ``_SPARK_SSL_RPC_*_PASSWORD``, the
worker factory's and gateway's handshake secrets). The node supervisor, the TF process
and TensorBoard need none of them, and the TF process runs user code next to
TensorFlow's unauthenticated gRPC servers; so none of them gets one.

The rule (:func:`is_spark_secret`): a variable is dropped when

- its name starts with ``_SPARK_`` or ``_PYSPARK_``: Spark's private variables
  (the auth secret, the RPC TLS passwords, the launcher's secret, the driver's
  connection-info path); nothing of a user's is named so;
- it is one of Spark's named secrets without that prefix
  (:data:`SPARK_NAMED_SECRETS`); or
- its name is in Spark's namespace (starts with ``SPARK_`` or ``PYSPARK_``) and
  contains ``SECRET``, ``PASSWORD`` or ``TOKEN``: Spark's future secrets.

Everything else stays, secrets of the user's included (``AWS_SECRET_ACCESS_KEY``,
``HADOOP_TOKEN_FILE_LOCATION``): storage and Kerberos need them. A variable the user
passes with ``tfos.run(env=...)`` is applied after the filter, so it always reaches the
TF process, whatever its name; one set with ``spark.executorEnv.*`` under a name the
rule matches is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Spark's secrets whose names carry no underscore prefix: pyspark's worker-daemon and
#: gateway handshakes, Spark Connect's token
SPARK_NAMED_SECRETS = frozenset({
    "PYTHON_WORKER_FACTORY_SECRET", "PYSPARK_GATEWAY_SECRET", "SPARK_CONNECT_AUTHENTICATE_TOKEN",
})
_PRIVATE_PREFIXES = ("_SPARK_", "_PYSPARK_")
_SPARK_PREFIXES = ("SPARK_", "PYSPARK_")
_SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN")


def is_spark_secret(name: str) -> bool:
    """Whether ``name`` is one of Spark's credential variables (the rule in the module doc)."""
    upper = name.upper()
    if upper.startswith(_PRIVATE_PREFIXES) or upper in SPARK_NAMED_SECRETS:
        return True
    return upper.startswith(_SPARK_PREFIXES) and any(word in upper for word in _SECRET_WORDS)


def without_spark_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` with every Spark secret removed; the base of every child's environment."""
    return {name: value for name, value in env.items() if not is_spark_secret(name)}
