"""Several hosts on this machine: network namespaces joined by a bridge, and a standalone
Spark master and workers across them (tests/integration/test_multihost.py).

The bridge and its address (``prefix.1``, the driver's and the master's host) live in the
root namespace, where the test process and its Spark driver run. Each worker gets its own
namespace with ``lo`` and one veth end (``prefix.2``, ``prefix.3``...) on the bridge, and no
default route: a worker reaches the other hosts on the subnet and nothing else, not even the
root namespace's loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

import psutil

from tests.log_tail import log_tail


class NetnsUnavailable(RuntimeError):
    """This machine (or container) does not let the test create namespaces; the reason says why."""


@dataclass
class Network:
    """The namespaces, bridge and addresses one test module made; ``delete_network`` undoes them."""

    prefix: str  # "10.213.7": hosts are prefix.1 (bridge), prefix.2, prefix.3...
    bridge: str
    namespaces: list[str] = field(default_factory=list)
    host_veths: list[str] = field(default_factory=list)

    @property
    def driver_ip(self) -> str:
        return f"{self.prefix}.1"

    @property
    def worker_ips(self) -> list[str]:
        return [f"{self.prefix}.{i + 2}" for i in range(len(self.namespaces))]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` exited {result.returncode}: {result.stderr.strip()}")
    return result


def unavailable_reason() -> str | None:
    """Why this machine cannot host the test's namespaces, or ``None`` when it can."""
    if os.geteuid() != 0:
        return f"creating network namespaces (ip netns add) needs root; running as uid {os.geteuid()}"
    if shutil.which("ip") is None:
        return "iproute2's `ip` command is not installed (apt-get install iproute2)"
    return None


def _free_prefix() -> str:
    """A 10.x.y /24 derived from the pid that no address or route of this machine uses."""
    used = _ip("-4", "route", "show", "table", "all").stdout + _ip("-4", "-o", "addr").stdout
    pid = os.getpid()
    for attempt in range(64):
        n = pid + attempt * 7919
        prefix = f"10.{200 + n % 50}.{(n // 50) % 250 + 1}"
        if f" {prefix}." not in f" {used}" and f"\n{prefix}." not in used:
            return prefix
    raise RuntimeError(f"no free 10.x.y.0/24 subnet found for the test network; routes and addresses:\n{used}")


def create_network(workers: int) -> Network:
    """Make ``workers`` namespaces behind one bridge. Cleans up what it made when a step fails.

    Raises:
        NetnsUnavailable: ``ip netns add``, the bridge or the veth pair are refused here
            (an unprivileged container); nothing is left behind.
        RuntimeError: a later step failed.
    """
    pid = os.getpid()
    net = Network(prefix=_free_prefix(), bridge=f"tfosbr{pid}")
    try:
        for i in range(workers):
            name = f"tfos-{pid}-w{i + 1}"
            added = _ip("netns", "add", name, check=False)
            if added.returncode != 0:
                raise NetnsUnavailable(f"`ip netns add {name}` failed here: {added.stderr.strip()}")
            net.namespaces.append(name)
        made = _ip("link", "add", net.bridge, "type", "bridge", check=False)
        if made.returncode != 0:
            raise NetnsUnavailable(f"cannot create a Linux bridge here: {made.stderr.strip()}")
        _ip("addr", "add", f"{net.driver_ip}/24", "dev", net.bridge)
        _ip("link", "set", net.bridge, "up")
        for i, (ns, addr) in enumerate(zip(net.namespaces, net.worker_ips, strict=True)):
            host_end = f"tfv{pid}h{i + 1}"
            made = _ip("link", "add", host_end, "type", "veth", "peer", "name", f"tfv{pid}n{i + 1}", check=False)
            if made.returncode != 0:
                raise NetnsUnavailable(f"cannot create a veth pair here: {made.stderr.strip()}")
            net.host_veths.append(host_end)
            _ip("link", "set", f"tfv{pid}n{i + 1}", "netns", ns)
            _ip("-n", ns, "link", "set", f"tfv{pid}n{i + 1}", "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "set", host_end, "master", net.bridge)
            _ip("link", "set", host_end, "up")
    except BaseException:
        delete_network(net)
        raise
    return net


def delete_network(net: Network) -> list[str]:
    """Kill whatever still runs in the namespaces, delete them, the veths and the bridge.

    Returns the errors (empty when everything went); never raises.
    """
    errors = []
    for ns in net.namespaces:
        # only this test's processes can be in its namespaces (started by it, or their children)
        pids = _ip("netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        if pids:
            errors.append(f"killed {len(pids)} process(es) still running in {ns}: {' '.join(pids)}")
    for ns in net.namespaces:
        result = _ip("netns", "del", ns, check=False)
        if result.returncode != 0:
            errors.append(f"ip netns del {ns}: {result.stderr.strip()}")
    for link in [*net.host_veths, net.bridge]:  # the veths mostly went with their namespaces
        if _ip("link", "show", link, check=False).returncode == 0:
            result = _ip("link", "del", link, check=False)
            if result.returncode != 0:
                errors.append(f"ip link del {link}: {result.stderr.strip()}")
    return errors


def leftovers(net: Network) -> list[str]:
    """Namespaces and links of ``net`` that still exist."""
    left = [ns for ns in net.namespaces if ns in _ip("netns", "list", check=False).stdout.split()]
    left += [link for link in [*net.host_veths, net.bridge] if _ip("link", "show", link, check=False).returncode == 0]
    return left


# ---------------------------------------------------------------------------- reachability

_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("reached")
except OSError as exc:
    print(f"not reached: {exc}")
"""


def connect_from(ns: str, host: str, port: int) -> str:
    """Try a TCP connection from namespace ``ns``; "reached" or "not reached: <reason>"."""
    result = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", _CONNECT, host, str(port)],
                            capture_output=True, text=True, timeout=30)
    return (result.stdout.strip() or result.stderr.strip()).splitlines()[-1]


def check_paths(net: Network) -> None:
    """Each namespace reaches the bridge address and not the root namespace's loopback.

    Raises:
        RuntimeError: with what each namespace saw.
    """
    with socket.create_server((net.driver_ip, 0)) as bridged, socket.create_server(("127.0.0.1", 0)) as loop:
        seen = {ns: (connect_from(ns, net.driver_ip, bridged.getsockname()[1]),
                     connect_from(ns, "127.0.0.1", loop.getsockname()[1])) for ns in net.namespaces}
    if any(to_bridge != "reached" or to_loop == "reached" for to_bridge, to_loop in seen.values()):
        raise RuntimeError(
            f"the test network does not isolate as built: each namespace should reach {net.driver_ip} "
            f"and not the root namespace's 127.0.0.1; saw {seen} (a firewall on bridged traffic?)")


# ---------------------------------------------------------------------- standalone Spark


def spark_class() -> str:
    """``$SPARK_HOME/bin/spark-class`` when SPARK_HOME is set, else the pip pyspark's."""
    if os.environ.get("SPARK_HOME"):
        return os.path.join(os.environ["SPARK_HOME"], "bin", "spark-class")
    import pyspark

    return os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-class")


def _free_port(host: str) -> int:
    with socket.create_server((host, 0)) as sock:
        return sock.getsockname()[1]


@dataclass
class Daemon:
    name: str
    proc: subprocess.Popen
    log_path: str

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)


class StandaloneSpark:
    """A master on the bridge address and one 1-core worker in each namespace.

    ``launch`` starts the daemons without waiting; ``wait_ready`` blocks until every worker
    registered (or raises with the daemons' log tails); ``stop`` ends every daemon's process group (SIGTERM, then SIGKILL after ``grace_s``) and
    never raises.
    """

    def __init__(self, net: Network, state_dir: str, worker_memory: str = "1536m"):
        self.net = net
        self.state_dir = state_dir
        self.worker_memory = worker_memory
        self.daemons: list[Daemon] = []
        self.port = _free_port(net.driver_ip)
        self.ui_port = _free_port(net.driver_ip)
        self.url = f"spark://{net.driver_ip}:{self.port}"

    def _launch(self, name: str, args: list[str], local_ip: str) -> None:
        log_path = os.path.join(self.state_dir, f"{name}.log")
        with open(log_path, "wb") as log:
            # its own session: stop() ends the daemon with its executors and their Python workers
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "SPARK_LOCAL_IP": local_ip}, start_new_session=True)
        self.daemons.append(Daemon(name, proc, log_path))

    def launch(self) -> None:
        """Start the master and the workers in the background; ``wait_ready`` waits for them."""
        os.makedirs(self.state_dir, exist_ok=True)
        self._launch("master", [spark_class(), "org.apache.spark.deploy.master.Master",
                                "--host", self.net.driver_ip, "--port", str(self.port),
                                "--webui-port", str(self.ui_port)], self.net.driver_ip)
        # workers start meanwhile: they retry registering until the master is up
        for i, (ns, addr) in enumerate(zip(self.net.namespaces, self.net.worker_ips, strict=True)):
            work_dir = os.path.join(self.state_dir, f"work-{i + 1}")
            os.makedirs(work_dir, exist_ok=True)
            self._launch(f"worker-{i + 1}", [
                "ip", "netns", "exec", ns, spark_class(), "org.apache.spark.deploy.worker.Worker",
                "--host", addr, "--cores", "1", "--memory", self.worker_memory, "--webui-port", "0",
                "--work-dir", work_dir, self.url], addr)

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Block until every worker registered with the master, from its own address.

        Raises:
            RuntimeError: a daemon exited, or ``timeout_s`` passed; with every daemon's log tail.
        """
        wanted = sorted(self.net.worker_ips)
        end = time.monotonic() + timeout_s
        while True:
            hosts = self.alive_worker_hosts()
            if hosts == wanted:
                return
            dead = [d for d in self.daemons if d.proc.poll() is not None]
            if dead or time.monotonic() > end:
                why = (f"{', '.join(d.name for d in dead)} exited" if dead
                       else f"waited {timeout_s:.0f} s for workers {wanted} to register")
                tails = "\n".join(f"--- {d.name} ({d.log_path})\n{d.tail()}" for d in self.daemons)
                raise RuntimeError(f"standalone Spark did not come up: {why}; alive workers: {hosts}\n{tails}")
            time.sleep(0.5)

    def alive_worker_hosts(self) -> list[str] | None:
        """Hosts of the ALIVE workers, from the master's JSON page; ``None`` while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.net.driver_ip}:{self.ui_port}/json/", timeout=2) as r:
                state = json.load(r)
        except (OSError, ValueError):
            return None
        return sorted(w["host"] for w in state.get("workers", []) if w.get("state") == "ALIVE")

    def pids(self) -> list[int]:
        """Every process of the daemons' sessions (daemons, executors, Python workers)."""
        sessions = {d.proc.pid for d in self.daemons}
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) in sessions and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc.pid)
            except (OSError, psutil.Error):
                pass
        return found

    def stop(self, grace_s: float = 10.0) -> list[str]:
        """End every daemon's process group, workers first; return what had to be killed."""
        notes = []
        order = [d for d in self.daemons if d.name != "master"] + [d for d in self.daemons if d.name == "master"]
        for daemon in order:
            _signal_group(daemon.proc.pid, signal.SIGTERM)
        end = time.monotonic() + grace_s
        for daemon in order:
            try:
                daemon.proc.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                notes.append(f"{daemon.name} (pid {daemon.proc.pid}) ignored SIGTERM for {grace_s} s")
        # SIGKILL whatever is left in the sessions (the JVM may exit before its executors do)
        while (left := self.pids()) and time.monotonic() < end + 5:
            for daemon in order:
                _signal_group(daemon.proc.pid, signal.SIGKILL)
            time.sleep(0.2)
        for daemon in order:
            if daemon.proc.poll() is None:
                daemon.proc.kill()
            daemon.proc.wait(5)
        if left:
            notes.append(f"processes still in the daemons' sessions: {left}")
        return notes


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
