"""``tfos submit``: argv -> :class:`SubmitConfig` -> the ``spark-submit`` command and its environment.

Two pure steps the CLI (``tfos/cli.py``) chains, and tests call directly:

- :func:`parse_submit_args` reads ``[tfos options] [spark-submit options] script.py [args]``
  into a validated, frozen :class:`SubmitConfig`;
- :func:`build_command` turns it into a :class:`SubmitCommand`: the ``spark-submit``
  argv, the environment variables to add, and the packing command to run first, if any.

Neither starts a process. One module per concept:

- :mod:`~tfos.submit.args`: the command-line grammar, its option tables and ``USAGE``;
- :mod:`~tfos.submit.config`: :class:`SubmitConfig` and its checks, :class:`SubmitError`;
- :mod:`~tfos.submit.master`: what a ``--master`` URL names;
- :mod:`~tfos.submit.command`: the settings tfos needs, and the command;
- :mod:`~tfos.submit.machine`: this machine's facts (spark-submit, ``--hdfs``, ``--pack-env``).
"""

from tfos.submit.args import USAGE, parse_submit_args, split_args, wants_help
from tfos.submit.command import SubmitCommand, build_command
from tfos.submit.config import (
    ARCHIVE_SUFFIXES,
    DEFAULT_CLUSTER_SIZE,
    DEFAULT_EXECUTOR_MB,
    DEFAULT_PACK_OUTPUT,
    DEPLOY_MODES,
    ENV_LINK,
    ENV_PYTHON,
    ConfEntry,
    SubmitConfig,
    SubmitError,
    memory_mb,
)
from tfos.submit.machine import find_spark_submit, hdfs_environment

__all__ = [
    "SubmitCommand", "SubmitConfig", "SubmitError", "build_command", "find_spark_submit",
    "hdfs_environment", "parse_submit_args", "split_args", "wants_help", "USAGE",
    # constants and helpers for callers that build their own checks
    "ARCHIVE_SUFFIXES", "ConfEntry", "DEFAULT_CLUSTER_SIZE", "DEFAULT_EXECUTOR_MB", "DEFAULT_PACK_OUTPUT",
    "DEPLOY_MODES", "ENV_LINK", "ENV_PYTHON", "memory_mb",
]
