"""Storage settings Spark users already keep in the Spark conf, as the SDKs' variables.

A Spark application that reads ``s3a://`` through Hadoop has its endpoint and keys in
``spark.hadoop.fs.s3a.*``; tfos reaches storage through pyarrow, whose clients read the
AWS/GCP variables. One rule, everywhere tfos touches storage (the nodes' mirror and TF
process, ``tfos.run``'s storage check, ``tfos.dfutil`` on the driver and in its Spark
tasks, ``tfos.storage.*`` called on the driver): **a variable the process's environment
sets wins; where it sets none, the Spark conf's value (mapped below) is used**
(:func:`storage_environ`). The Spark conf is the session's as the entry point sees it:
``tfos.run``'s application, the DataFrame's session for ``dfutil`` (runtime
``spark.conf.set`` included), the active session for ``tfos.storage.*``:

================================================  ================================
``spark.hadoop.fs.s3a.endpoint``                   ``AWS_ENDPOINT_URL`` (``http://``
                                                   when ``fs.s3a.connection.ssl.enabled``
                                                   is false, else ``https://``)
``spark.hadoop.fs.s3a.endpoint.region``            ``AWS_REGION``
``spark.hadoop.fs.s3a.access.key`` / ``.secret.key``  ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
``spark.hadoop.fs.s3a.session.token``              ``AWS_SESSION_TOKEN``
``spark.hadoop.google.cloud.auth.service.account.  ``GOOGLE_APPLICATION_CREDENTIALS``
json.keyfile``
================================================  ================================

The values travel to the nodes like the run's secret (inside the task, over Spark's RPC:
turn on ``spark.network.crypto.enabled``), never in ``argv`` or a log line.
"""

from __future__ import annotations

import contextlib
import contextvars

#: in a Spark task of the driver's (dfutil): the conf's settings the driver sent along
_TASK_SETTINGS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("tfos_storage_settings",
                                                                                     default=None)

_DIRECT = {
    "spark.hadoop.fs.s3a.endpoint.region": "AWS_REGION",
    "spark.hadoop.fs.s3a.access.key": "AWS_ACCESS_KEY_ID",
    "spark.hadoop.fs.s3a.secret.key": "AWS_SECRET_ACCESS_KEY",
    "spark.hadoop.fs.s3a.session.token": "AWS_SESSION_TOKEN",
    "spark.hadoop.google.cloud.auth.service.account.json.keyfile": "GOOGLE_APPLICATION_CREDENTIALS",
}
#: variables the nodes' storage clients read that may hold secrets (never shown)
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


def storage_env_from_conf(get) -> dict[str, str]:
    """The SDK variables the Spark conf (``get(key, default)``) implies; empty when none."""
    env = {name: get(key, None) for key, name in _DIRECT.items()}
    endpoint = get("spark.hadoop.fs.s3a.endpoint", None)
    if endpoint:
        if "://" not in endpoint:
            ssl = (get("spark.hadoop.fs.s3a.connection.ssl.enabled", "true") or "true").lower() != "false"
            endpoint = ("https://" if ssl else "http://") + endpoint
        env["AWS_ENDPOINT_URL"] = endpoint
    return {name: value for name, value in env.items() if value}


def apply_missing(environ, env: dict[str, str]) -> None:
    """Set each variable of ``env`` in ``environ`` that is not set there already."""
    for name, value in env.items():
        environ.setdefault(name, value)


def session_storage_env(spark) -> dict[str, str]:
    """The SDK variables the conf of ``spark`` implies: a SparkSession (classic or Spark
    Connect: its runtime conf, which holds the builder's and spark-submit's too), a
    SparkContext, or a :class:`tfos.spark.app.SparkApp`; empty when the conf cannot be read."""
    if hasattr(spark, "conf") and hasattr(spark.conf, "get"):
        try:
            # one call (pyspark 4), not a py4j or Connect round trip per key: resolve() on the
            # driver asks for every storage operation
            values = dict(spark.conf.getAll)
        except Exception:  # noqa: BLE001 - pyspark 3.5 has no getAll: ask key by key
            values = None

        def get(key, default=None):
            if values is not None:
                return values.get(key, default)
            try:
                return spark.conf.get(key, default)
            except Exception:  # noqa: BLE001 - a key the session will not show
                return default
    elif hasattr(spark, "getConf"):  # a SparkContext
        conf = spark.getConf()
        get = conf.get
    elif hasattr(spark, "get"):  # a SparkApp
        get = spark.get
    else:
        return {}
    return storage_env_from_conf(get)


def active_session():
    """The SparkSession active in this process (classic or Spark Connect), or ``None``: always
    on an executor or in a TF process, where no session runs (and pyspark is not imported
    for it)."""
    import sys

    if "pyspark" not in sys.modules:
        return None
    try:
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
    except Exception:  # noqa: BLE001 - no JVM, a stopped context
        session = None
    if session is None and "pyspark.sql.connect.session" in sys.modules:
        try:
            from pyspark.sql.connect.session import SparkSession as RemoteSession

            session = RemoteSession.getActiveSession()
        except Exception:  # noqa: BLE001
            session = None
    return session


@contextlib.contextmanager
def task_storage_settings(settings: dict[str, str]):
    """In a Spark task: within, :func:`storage_environ` takes ``settings`` (the driver's
    :func:`session_storage_env`) as the Spark conf's. The worker's environment is not
    changed: a reused Python worker keeps no settings of an earlier job."""
    token = _TASK_SETTINGS.set(dict(settings))
    try:
        yield
    finally:
        _TASK_SETTINGS.reset(token)


def storage_environ(spark=None, environ=None):
    """The environment storage clients read (the rule in the module doc): ``environ``
    (default ``os.environ``) with, for each variable it lacks, the value the Spark conf of
    ``spark`` implies (default: the active session's on the driver; in a dfutil task, the
    settings its driver sent). Returns ``environ`` itself when the conf adds nothing."""
    import os

    environ = os.environ if environ is None else environ
    if spark is None:
        spark = active_session()
    extra = session_storage_env(spark) if spark is not None else (_TASK_SETTINGS.get() or {})
    missing = {name: value for name, value in extra.items() if name not in environ}
    if not missing:
        return environ
    merged = dict(environ)
    merged.update(missing)
    return merged
