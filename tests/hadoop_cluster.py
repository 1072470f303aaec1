"""Hadoop's own mini clusters on loopback for the HDFS (and YARN) tests.

``scripts/hadoop/fetch.sh`` copies ``hadoop-client-minicluster`` 3.5.0 (the Hadoop of pip's
pyspark 4.3) and what it needs from Maven Central, once; ``scripts/hadoop/MiniClusters.java``
runs as a single-file Java program on those jars: a NameNode and a DataNode
(``MiniDFSCluster``), with ``yarn=True`` also a ResourceManager and a NodeManager
(``MiniYARNCluster``), all on 127.0.0.1. It writes the ``core-site.xml`` (``fs.defaultFS``),
``hdfs-site.xml`` and ``yarn-site.xml`` clients need into a ``HADOOP_CONF_DIR``. The fixture
that owns it closes its standard input to stop it and checks that the JVM is gone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading

from tests.log_tail import log_tail

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts", "hadoop")
#: seconds for the first fetch of the jars (about 100 MB from Maven Central)
FETCH_TIMEOUT_S = 900
#: seconds for the daemons to come up
START_TIMEOUT_S = 180


def fetch_jars() -> str:
    """The directory with the mini-cluster jars; fetched with Maven on first use."""
    result = subprocess.run([os.path.join(SCRIPTS, "fetch.sh")], capture_output=True, text=True,
                            timeout=FETCH_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/hadoop/fetch.sh failed ({result.returncode}): {result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


class HadoopCluster:
    """The daemons' JVM and what a client needs: ``uri`` (``hdfs://127.0.0.1:PORT``),
    ``conf_dir`` (a ``HADOOP_CONF_DIR``), ``rm_address`` with YARN."""

    def __init__(self, yarn: bool = False) -> None:
        self.yarn = yarn
        self.workdir = tempfile.mkdtemp(prefix="tfos-hadoop-")
        self.conf_dir = os.path.join(self.workdir, "conf")
        self.log_path = os.path.join(self.workdir, "daemons.log")
        self.uri = ""
        self.rm_address = ""
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> HadoopCluster:
        jars = fetch_jars()
        java = shutil.which("java") or "java"
        tmp = os.path.join(self.workdir, "tmp")  # Jetty unpacks its web apps there; stop() removes it
        os.makedirs(tmp)
        command = [java, "-Xmx1g", f"-Djava.io.tmpdir={tmp}", "-cp", os.path.join(jars, "*"),
                   os.path.join(SCRIPTS, "MiniClusters.java"), self.conf_dir, os.path.join(self.workdir, "data"),
                   *(["--yarn"] if self.yarn else [])]
        # the NodeManager starts its containers with {{JAVA_HOME}}/bin/java
        java_home = os.environ.get("JAVA_HOME") or os.path.dirname(os.path.dirname(os.path.realpath(java)))
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - the JVM writes it until stop()
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     cwd=self.workdir, start_new_session=True, text=True,
                                     env={**os.environ, "JAVA_HOME": java_home})
        lines: list[str] = []
        ended = threading.Event()  # READY printed, or the launcher's output closed

        def read() -> None:
            for line in self.proc.stdout:
                lines.append(line)
                if line.startswith("READY "):
                    break
            ended.set()

        threading.Thread(target=read, daemon=True).start()
        if not ended.wait(START_TIMEOUT_S) or not any(line.startswith("READY ") for line in lines):
            message = (f"the Hadoop mini clusters did not come up in {START_TIMEOUT_S} s "
                       f"(exit code {self.proc.poll()}); last log lines:\n{log_tail(self.log_path)}")
            self.stop()
            raise RuntimeError(message)
        for line in lines:
            if line.startswith("READY "):
                self.uri = line.split()[1]
            elif line.startswith("YARN "):
                self.rm_address = line.split()[1]
        return self

    def env(self) -> dict[str, str]:
        """What a client process needs: the Hadoop conf dir (hdfs-native reads it too)."""
        return {"HADOOP_CONF_DIR": self.conf_dir}

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()  # the launcher stops its daemons and exits
        except OSError:
            pass
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)
        self.proc = None
        self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def serve(yarn: bool = False):
    """A fixture's body: the running cluster, stopped after, its JVM checked gone."""
    import psutil

    cluster = HadoopCluster(yarn=yarn).start()
    pid = cluster.proc.pid
    try:
        yield cluster
    finally:
        cluster.stop()
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
