"""A SIGKILLed supervisor leaves nothing of its node behind: not the TF process (its
parent-death signal), and not what ``main_fun`` spawned or forked, which the
parent-death signal never reaches; a forked child would also keep the inherited feed
listener open (the TF process group's reaper: tfos/node/process.py)."""

from __future__ import annotations

import os
import signal
import sys
import time

import cloudpickle
import psutil
import pytest

import tfos
from tests.integration.spark_helpers import listening, process_gone, wait_no_node_processes
from tests.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _spawn_fork_and_sleep(args, ctx):
    import os as _os
    import subprocess as _subprocess
    import sys as _sys
    import time as _time

    if ctx.job_name == "worker":
        sleeper = _subprocess.Popen([_sys.executable, "-c", "import time; time.sleep(120)"])
        forked = _os.fork()
        if forked == 0:  # holds every fd of the TF process, the feed listener included
            _time.sleep(120)
            _os._exit(0)
        with open(_os.path.join(args, "worker.tmp"), "w") as f:
            f.write(f"{_os.getpid()} {sleeper.pid} {forked}")
        _os.rename(_os.path.join(args, "worker.tmp"), _os.path.join(args, "worker.pids"))
    _time.sleep(120)


@pytest.mark.slow  # CI time; covered in the default run by a killed supervisor: test_launch's killed-supervisor test
def test_sigkilled_supervisor_takes_its_tf_process_group_with_it(sc, tmp_path):
    cluster = tfos.run(sc, _spawn_fork_and_sleep, str(tmp_path), num_executors=2,
                       input_mode=tfos.InputMode.SPARK, heartbeat_interval_s=0.5, heartbeat_timeout_s=3.0)
    pids_file = tmp_path / "worker.pids"
    assert wait_until(pids_file.exists, 90), "the worker's main_fun did not start its children"
    tf_pid, sleeper, forked = (int(p) for p in pids_file.read_text().split())
    worker = next(n for n in cluster.state.snapshot() if n.pid == psutil.Process(tf_pid).ppid())
    assert listening(worker.host, worker.feed_port)
    supervisor = psutil.Process(tf_pid).parent()
    assert "tfos.node.supervisor" in " ".join(supervisor.cmdline())
    group = [p.pid for p in psutil.process_iter() if _pgid(p.pid) == tf_pid]
    assert {tf_pid, sleeper, forked} < set(group)  # and the reaper

    os.kill(supervisor.pid, signal.SIGKILL)
    killed = time.monotonic()
    assert wait_until(lambda: all(process_gone(p) for p in group), 5), (
        [p for p in group if not process_gone(p)])
    # a killed multi-threaded process shows as a zombie while its other threads still exit,
    # and the last one to go closes its files: give the listener that moment too
    assert wait_until(lambda: not listening(worker.host, worker.feed_port), 5)
    gone_after = time.monotonic() - killed
    print(f"the TF process group ({len(group)} processes) and its feed listener were gone "
          f"{gone_after:.2f} s after the SIGKILL")

    with pytest.raises(tfos.ClusterFailedError) as err:
        cluster.shutdown(timeout=120)
    assert "node worker:0 (host 127.0.0.1" in str(err.value)
    assert wait_no_node_processes() == []


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


def _instance_spawns_and_sleeps(args, ctx):
    import os as _os
    import subprocess as _subprocess
    import sys as _sys
    import time as _time

    marker = _os.path.join(args, f"started.{ctx.worker_num}")
    if _os.path.exists(marker):
        return "retried"  # Spark's retry of the stage after the kill: end at once
    open(marker, "w").close()
    if ctx.worker_num == 1:
        sleeper = _subprocess.Popen([_sys.executable, "-c", "import time; time.sleep(120)"])
        forked = _os.fork()
        if forked == 0:
            _time.sleep(120)
            _os._exit(0)
        with open(_os.path.join(args, "instance.tmp"), "w") as f:
            f.write(f"{_os.getpid()} {sleeper.pid} {forked}")
        _os.rename(_os.path.join(args, "instance.tmp"), _os.path.join(args, "instance.pids"))
    _time.sleep(120)
    return "slept"


def test_a_killed_spark_task_takes_its_parallel_run_instance_group_with_it(sc, tmp_path):
    import threading

    outcome: dict = {}

    def run():
        try:
            outcome["results"] = tfos.parallel_run(sc, _instance_spawns_and_sleeps, str(tmp_path), num_executors=2)
        except Exception as exc:  # noqa: BLE001 - either end is fine: the group's fate is the point
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    pids_file = tmp_path / "instance.pids"
    assert wait_until(pids_file.exists, 90), "instance 1 did not start its children"
    child, sleeper, forked = (int(p) for p in pids_file.read_text().split())
    task_worker = psutil.Process(child).parent()  # the Spark task's Python worker
    assert "tfos.node.instance" in " ".join(psutil.Process(child).cmdline())
    group = [p.pid for p in psutil.process_iter() if _pgid(p.pid) == child]
    assert {child, sleeper, forked} < set(group)  # and the reaper

    os.kill(task_worker.pid, signal.SIGKILL)
    assert wait_until(lambda: all(process_gone(p) for p in group), 5), [p for p in group if not process_gone(p)]
    thread.join(150)
    assert not thread.is_alive() and outcome, "parallel_run did not end after its task was killed"
    assert wait_no_node_processes() == []
