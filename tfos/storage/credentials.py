"""Storage settings Spark users already keep in the Spark conf, as the SDKs' variables.

A Spark application that reads ``s3a://`` through Hadoop has its endpoint and keys in
``spark.hadoop.fs.s3a.*``; the TF nodes reach storage through pyarrow, whose clients read
the AWS/GCP variables. The driver maps the first onto the second, and the nodes (their
mirror and their TF process) get them unless their environment already sets the variable:

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
