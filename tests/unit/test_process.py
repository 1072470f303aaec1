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

from tests.polling import wait_until
from tfos.node.process import (
    MAX_LINE_BYTES,
    OutputTail,
    PidWatch,
    describe_exit,
    terminate,
)

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


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_output_tail_cuts_a_multi_megabyte_line_without_newline_and_counts_it():
    proc = _python("""
        import sys
        sys.stdout.write("first\\n")
        sys.stdout.write("x" * (5 << 20))   # 5 MiB, no newline, then the next line
        sys.stdout.write("\\nafter\\n")
        sys.stdout.write("y" * (3 << 20))   # 3 MiB at the very end, no newline at all
        sys.stdout.flush()
    """, stdout=subprocess.PIPE)
    sink = io.StringIO()
    tail = OutputTail(proc.stdout, "[worker:0]", sink=sink)
    proc.wait()
    tail.join(10)
    assert tail.text(max_lines=10).split("\n") == [
        "first",
        "x" * MAX_LINE_BYTES + f" [... {(5 << 20) - MAX_LINE_BYTES} more bytes cut]",
        "after",
        "y" * MAX_LINE_BYTES + f" [... {(3 << 20) - MAX_LINE_BYTES} more bytes cut]",
    ]
    assert tail.cut_lines == 2
    assert max(len(line) for line in sink.getvalue().splitlines()) < MAX_LINE_BYTES + 100


def test_output_tail_keeps_a_line_of_exactly_the_limit_whole():
    proc = _python(f"""
        print("z" * {MAX_LINE_BYTES})
        print("next")
    """, stdout=subprocess.PIPE)
    tail = OutputTail(proc.stdout, "[worker:0]", sink=io.StringIO())
    proc.wait()
    tail.join(5)
    assert tail.text() == "z" * MAX_LINE_BYTES + "\nnext"
    assert tail.cut_lines == 0


#: a "TF process": starts its group reaper on argv[1], spawns a sleeper and forks a child
_TF_LIKE = """
import os, subprocess, sys, time
from tfos.node.process import start_group_reaper
reaper = start_group_reaper(int(sys.argv[1]))
sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
forked = os.fork()
if forked == 0:
    time.sleep(120)
    os._exit(0)
print(reaper, sleeper.pid, forked, flush=True)
time.sleep(120)
"""


def test_group_reaper_kills_every_member_of_the_group_when_the_supervisor_is_sigkilled():
    # no parent-death signal here: the reaper alone must take the whole group down
    supervisor = _python(f"""
        import os, subprocess, sys, time
        watch_read, watch_write = os.pipe()
        tf = subprocess.Popen([sys.executable, "-c", {_TF_LIKE!r}, str(watch_read)],
                              stdout=subprocess.PIPE, pass_fds=(watch_read,), start_new_session=True)
        os.close(watch_read)
        print(tf.pid, tf.stdout.readline().decode().strip(), flush=True)
        time.sleep(120)
    """, stdout=subprocess.PIPE)
    pids = [int(p) for p in supervisor.stdout.readline().split()]
    assert len(pids) == 4
    time.sleep(0.5)
    assert [p for p in pids if _gone(p)] == [], "the group died while its supervisor lived"
    supervisor.kill()
    supervisor.wait()
    assert wait_until(lambda: all(_gone(p) for p in pids), 5), [p for p in pids if not _gone(p)]


def test_group_reaper_holds_none_of_its_process_pipes_and_ends_with_the_writer():
    proc = _python("""
        import os
        from tfos.node.process import start_group_reaper
        watch_read, watch_write = os.pipe()
        print(start_group_reaper(watch_read), flush=True)
    """, stdout=subprocess.PIPE)
    reaper = int(proc.stdout.readline())
    assert proc.stdout.read() == b""  # EOF: the reaper does not hold the output pipe open
    proc.wait()
    assert wait_until(lambda: _gone(reaper), 5)  # the pipe's writer exited: the group is reaped


# ------------------------------------------------------------ events and the user's function


def _pipe():
    read_fd, write_fd = os.pipe()
    return os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb")


def test_events_arrive_in_order_with_their_attachments_and_end_at_eof():
    from tfos.node.frames import EventWriter, read_events

    reader, writer = _pipe()
    events = EventWriter(writer)
    events("running")
    events("done", attachment=b"\x00pickled", note="x")
    writer.close()
    assert list(read_events(reader)) == [{"event": "running"},
                                         {"event": "done", "note": "x", "attachment": b"\x00pickled"}]
    assert reader.closed


def test_a_stream_cut_inside_a_frame_ends_the_events_quietly():
    from tfos.node import frames

    reader, writer = _pipe()
    frames.write_json(writer, {"event": "running"})
    writer.write(b"\x00\x00\x01\x00{\"ev")  # a writer killed mid-frame
    writer.close()
    assert list(frames.read_events(reader)) == [{"event": "running"}]


def test_an_event_writer_whose_reader_is_gone_does_not_raise():
    from tfos.node.frames import EventWriter

    reader, writer = _pipe()
    reader.close()
    EventWriter(writer)("failed", message="nobody hears this")


def _payload(fn, args):
    import cloudpickle

    return cloudpickle.dumps((fn, args, None))


def _returns_argv_and_ctx(args, ctx):
    return list(sys.argv), ctx


def _exits(code):
    def main_fun(args, ctx):
        sys.exit(code)
    return main_fun


def _raises(args, ctx):
    raise RuntimeError("user code gave up")


@pytest.fixture
def saved_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))


def test_the_user_function_gets_list_args_as_argv_and_its_value_comes_back(saved_argv):
    from tfos.node.user_function import UserOutcome, run_user_function

    sent = []
    outcome = run_user_function(_payload(_returns_argv_and_ctx, ["train.py", "--epochs", "3"]), lambda: "ctx",
                                lambda *a, **k: sent.append((a, k)))
    assert outcome == UserOutcome(0, (["train.py", "--epochs", "3"], "ctx"))
    assert sent == []


@pytest.mark.parametrize(("code", "exit_code", "message"), [
    (0, 0, None),
    (None, 0, None),
    (2, 1, "main_fun raised SystemExit: 2"),
    ("bad flag", 1, "main_fun raised SystemExit: bad flag"),
])
def test_system_exit_zero_is_a_normal_end_and_any_other_code_a_failure(saved_argv, code, exit_code, message):
    from tfos.node.user_function import run_user_function

    sent = []
    outcome = run_user_function(_payload(_exits(code), None), lambda: None, lambda *a, **k: sent.append((a, k)))
    assert (outcome.exit_code, outcome.value) == (exit_code, None)
    assert [k["message"] for _, k in sent] == ([] if message is None else [message])


def test_a_raising_user_function_reports_failed_with_its_traceback(saved_argv, capsys):
    from tfos.node.user_function import run_user_function

    sent = []
    outcome = run_user_function(_payload(_raises, None), lambda: None, lambda *a, **k: sent.append((a, k)))
    assert outcome.exit_code == 1
    [(args, fields)] = sent
    assert args == ("failed",)
    assert fields["message"] == "main_fun raised RuntimeError: user code gave up"
    assert 'raise RuntimeError("user code gave up")' in fields["traceback"]
    assert fields["traceback"] in capsys.readouterr().err  # the output tail has it too


def _returns_a_lock(args, ctx):
    import threading

    return threading.Lock()


def test_a_result_that_cannot_be_pickled_is_reported_as_such_not_as_main_fun_raising(saved_argv, capsys):
    from tfos.node.instance import _call_and_pickle
    from tfos.node.user_function import run_user_function

    sent = []
    outcome = run_user_function(_payload(_returns_a_lock, None), lambda: None, lambda *a, **k: sent.append((a, k)),
                                _call_and_pickle)
    assert outcome.exit_code == 1
    [(_, fields)] = sent
    assert fields["message"].startswith("main_fun returned a lock that cannot be pickled back to the driver "
                                        "(TypeError: cannot pickle '_thread.lock' object)"), fields["message"]


def test_a_context_that_cannot_be_built_is_the_runs_failure(saved_argv, capsys):
    from tfos.node.user_function import run_user_function

    def broken_context():
        raise OSError("feed listener fd 9 is closed")

    sent = []
    outcome = run_user_function(_payload(_raises, None), broken_context, lambda *a, **k: sent.append((a, k)))
    assert outcome.exit_code == 1
    assert [k["message"] for _, k in sent] == ["main_fun raised OSError: feed listener fd 9 is closed"]
