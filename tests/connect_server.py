"""A real Spark Connect server on loopback for the Connect tests, from pyspark's own package.

``spark-submit --class org.apache.spark.sql.connect.service.SparkConnectServer`` in a
process group of its own, on ``local-cluster[2,1,1024]`` (two executor JVMs, like the
classic tests), its gRPC endpoint bound to 127.0.0.1 on a free port. The fixture that owns
it stops it and checks that its JVMs are gone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import psutil

from tests.log_tail import log_tail

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ConnectServer:
    """The server process and what a client needs to reach it."""

    def __init__(self, executors: int = 2, conf: dict[str, str] | None = None) -> None:
        self.executors = executors
        self.conf = dict(conf or {})
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.workdir = tempfile.mkdtemp(prefix="tfos-connect-")
        self.log_path = os.path.join(self.workdir, "server.log")

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        import pyspark

        spark_home = os.path.dirname(pyspark.__file__)
        conf = {
            "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.connect.grpc.binding.port": str(self.port),
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "2",
            "spark.executorEnv.CUDA_VISIBLE_DEVICES": "",
            "spark.pyspark.python": sys.executable,
            "spark.local.dir": os.path.join(self.workdir, "local"),
            **self.conf,
        }
        argv = [os.path.join(spark_home, "bin", "spark-submit"), "--class", SERVER_CLASS,
                "--name", "tfos-connect-test", "--master", f"local-cluster[{self.executors},1,1024]"]
        for key, value in conf.items():
            argv += ["--conf", f"{key}={value}"]
        return argv

    def start(self, timeout_s: float = 120.0) -> ConnectServer:
        self.port = _free_port()
        env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable,
                   SPARK_LOG_DIR=self.workdir, SPARK_PID_DIR=self.workdir)
        env.pop("SPARK_HOME", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Spark Connect server exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            if self._answers():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the Spark Connect server did not answer within {timeout_s:.0f} s:\n"
                           + self.log_tail())

    def _answers(self) -> bool:
        """Its gRPC port accepts, and both executors registered (a one-task job per executor
        would otherwise run on whichever came first)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        return len(self.executor_pids()) >= self.executors

    def executor_pids(self) -> list[int]:
        """The server's executor JVMs (CoarseGrainedExecutorBackend in its process group)."""
        found = []
        for pid in self.group_members():
            try:
                if "CoarseGrainedExecutorBackend" in " ".join(psutil.Process(pid).cmdline()):
                    found.append(pid)
            except psutil.Error:
                continue
        return found

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (the JVM's shutdown hook stops the SparkContext and its executors), then
        SIGKILL to the whole group; returns when no process of the group is left."""
        if self.proc is None:
            return
        group = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        deadline = time.monotonic() + 10
        while self.group_members() and time.monotonic() < deadline:
            time.sleep(0.2)

    def group_members(self) -> list[int]:
        members = []
        for proc in psutil.process_iter():
            try:
                if self.proc is not None and os.getpgid(proc.pid) == self.proc.pid \
                        and proc.status() != psutil.STATUS_ZOMBIE:
                    members.append(proc.pid)
            except (OSError, psutil.Error):
                continue
        return members


def connect_session(url: str):
    """A Spark Connect client session on ``url`` (a new one, not the process's default)."""
    from pyspark.sql import SparkSession

    return SparkSession.builder.remote(url).create()
