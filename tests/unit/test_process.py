"""Child supervision: polite stop then kill, reaping, parent-death, output tail."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from tfos.node.process import OutputTail, PidWatch, describe_exit, terminate, wait_until

pytestmark = pytest.mark.timeout(60)


def _python(code: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], start_new_session=True, **kw)


def test_terminate_kills_a_child_that_ignores_sigterm_after_the_grace():
    proc = _python("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """, stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    start = time.monotonic()
    code = terminate(proc, grace_s=0.5, what="stubborn child")
    assert code == -signal.SIGKILL
    assert 0.4 < time.monotonic() - start < 10
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE


def test_terminate_stops_a_polite_child_with_sigterm_and_its_grandchildren():
    proc = _python("""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(child.pid, flush=True)
        time.sleep(60)
    """, stdout=subprocess.PIPE)
    grandchild = int(proc.stdout.readline())
    assert terminate(proc, grace_s=5) == -signal.SIGTERM
    assert wait_until(lambda: not psutil.pid_exists(grandchild)
                      or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE, 5)


def test_terminate_of_nothing_or_an_exited_child_is_harmless():
    assert terminate(None, 1.0) is None
    proc = _python("pass")
    proc.wait()
    assert terminate(proc, 1.0) == 0


def test_a_guarded_child_dies_when_its_parent_is_killed():
    parent = _python("""
        import subprocess, sys, time, os
        child = subprocess.Popen([sys.executable, "-c",
            "import os, time; from tfos.node.process import die_with_parent; "
            f"die_with_parent({os.getpid()}); print('guarded', flush=True); time.sleep(60)"],
            stdout=subprocess.PIPE)
        assert child.stdout.readline() == b"guarded\\n"
        print(child.pid, flush=True)
        time.sleep(60)
    """, stdout=subprocess.PIPE)
    child = int(parent.stdout.readline())
    assert psutil.pid_exists(child)
    parent.kill()
    parent.wait()
    assert wait_until(lambda: not psutil.pid_exists(child)
                      or psutil.Process(child).status() == psutil.STATUS_ZOMBIE, 5)


def test_pid_watch_reports_a_process_that_ends():
    proc = _python("import time; time.sleep(60)")
    gone = []
    event = threading.Event()
    PidWatch([os.getpid(), proc.pid], lambda pid: (gone.append(pid), event.set()), interval_s=0.05).start()
    time.sleep(0.2)
    assert gone == []
    proc.kill()
    proc.wait()
    assert event.wait(5)
    assert gone == [proc.pid]


def test_output_tail_keeps_the_last_lines_and_tags_the_log():
    proc = _python("""
        for i in range(500):
            print(f"line {i}")
    """, stdout=subprocess.PIPE)
    sink = io.StringIO()
    tail = OutputTail(proc.stdout, "[worker:1]", sink=sink, max_lines=50)
    proc.wait()
    tail.join(5)
    assert tail.text(max_lines=3) == "line 497\nline 498\nline 499"
    assert sink.getvalue().splitlines()[0] == "[worker:1] line 0"


@pytest.mark.parametrize("code,text", [
    (0, "exited with code 0"),
    (3, "exited with code 3"),
    (-9, "was killed by SIGKILL (exit code -9)"),
    (-15, "was killed by SIGTERM (exit code -15)"),
    (None, "did not exit"),
])
def test_describe_exit(code, text):
    assert describe_exit(code) == text


def test_output_tail_leaves_tensorflow_start_up_chatter_out_of_failure_reports():
    proc = _python("""
        print("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
        print("I0000 00:00:1795537331.826532   20053 port.cc:153] oneDNN custom operations are on.")
        print("E0000 00:00:1795537592.386636   25626 cuda_platform.cc:52] failed call to cuInit")
        print("ValueError: the real problem")
    """, stdout=subprocess.PIPE)
    tail = OutputTail(proc.stdout, "[chief:0]", sink=io.StringIO())
    proc.wait()
    tail.join(5)
    assert tail.text() == (
        "E0000 00:00:1795537592.386636   25626 cuda_platform.cc:52] failed call to cuInit\n"
        "ValueError: the real problem"
    )
    assert len(tail.text(drop_noise=False).splitlines()) == 4
