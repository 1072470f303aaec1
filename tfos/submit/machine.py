"""Facts of this machine that ``tfos submit`` reads: where spark-submit is, what ``--hdfs``
needs from ``JAVA_HOME``/``HADOOP_HOME``, and what a ``--pack-env`` path holds.

Each function reads only what it is given (an environment mapping, a command runner, a
``which``), so tests hand it a fake machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from tfos.submit.config import ARCHIVE_SUFFIXES, SubmitError


def find_spark_submit(environ: Mapping[str, str]) -> str:
    """``$SPARK_HOME/bin/spark-submit``, else the one inside the installed pyspark package.

    Raises:
        SubmitError: neither exists.
    """
    home = environ.get("SPARK_HOME")
    if home:
        path = os.path.join(home, "bin", "spark-submit")
        if os.path.isfile(path):
            return path
        raise SubmitError(f"SPARK_HOME={home} has no bin/spark-submit; unset SPARK_HOME to use pyspark's")
    try:
        import pyspark
    except ImportError:
        raise SubmitError("pyspark is not installed and SPARK_HOME is not set: no spark-submit") from None
    path = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")
    if not os.path.isfile(path):
        raise SubmitError(f"the pyspark package at {os.path.dirname(pyspark.__file__)} has no bin/spark-submit; "
                          f"set SPARK_HOME to a Spark distribution")
    return path


def hdfs_environment(environ: Mapping[str, str], run: Callable[[list[str]], str]) -> dict[str, str]:
    """``CLASSPATH`` and ``LD_LIBRARY_PATH`` that let TensorFlow's libhdfs reach HDFS.

    ``CLASSPATH`` is ``hadoop classpath --glob`` (libhdfs's JVM does not expand ``*``);
    ``LD_LIBRARY_PATH`` has ``$JAVA_HOME/lib/server`` (libjvm.so) and ``$HADOOP_HOME/lib/native``
    (libhdfs.so), read on this machine: the cluster's nodes must have the same layout.

    Args:
        run: runs a command and returns its stdout (raises on failure).

    Raises:
        SubmitError: JAVA_HOME or HADOOP_HOME unset, or ``hadoop classpath`` failed.
    """
    missing = [name for name in ("JAVA_HOME", "HADOOP_HOME") if not environ.get(name)]
    if missing:
        raise SubmitError(f"--hdfs needs {' and '.join(missing)} set (libjvm.so is under "
                          f"$JAVA_HOME/lib/server, libhdfs.so under $HADOOP_HOME/lib/native)")
    hadoop = os.path.join(environ["HADOOP_HOME"], "bin", "hadoop")
    try:
        classpath = run([hadoop, "classpath", "--glob"]).strip()
    except Exception as exc:  # noqa: BLE001 - any failure of the command is the user's to fix
        raise SubmitError(f"--hdfs: `{hadoop} classpath --glob` failed: {exc}") from exc
    libs = f"{environ['JAVA_HOME']}/lib/server:{environ['HADOOP_HOME']}/lib/native"
    return {"CLASSPATH": classpath, "LD_LIBRARY_PATH": libs}


def env_archive(path: str, output: str, which: Callable[[str], str | None]) -> tuple[str, list[str]]:
    """The archive to ship for ``--pack-env path``, and the command that packs it (empty if packed).

    An archive (or a URL) is shipped as it is; a venv or conda env directory is packed into
    ``output`` by venv-pack or conda-pack, found with ``which``.

    Raises:
        SubmitError: no such archive, a directory that is no environment, or no packer.
    """
    if "://" in path or path.endswith(ARCHIVE_SUFFIXES):
        if "://" not in path and not os.path.isfile(path):
            raise SubmitError(f"--pack-env {path}: no such archive")
        return path, []
    env_dir = Path(path)
    if not env_dir.is_dir():
        raise SubmitError(
            f"--pack-env {path}: expected an environment directory (venv or conda env) or an "
            f"archive ({', '.join(ARCHIVE_SUFFIXES)}); found neither"
        )
    if (env_dir / "conda-meta").is_dir():
        tool, kind = "conda-pack", "a conda environment"
    elif (env_dir / "pyvenv.cfg").is_file():
        tool, kind = "venv-pack", "a virtualenv"
    else:
        raise SubmitError(f"--pack-env {path} is neither a virtualenv (no pyvenv.cfg) nor a conda "
                          f"environment (no conda-meta/)")
    if which(tool) is None:
        raise SubmitError(
            f"--pack-env {path} is {kind}, but {tool} is not installed; "
            f"python -m pip install {tool}, or pack it elsewhere and give the archive"
        )
    return output, [tool, "-p", str(env_dir), "-o", output, "--force"]
