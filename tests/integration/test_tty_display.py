"""The live progress rows in a real terminal: a driver script runs tfos on local-cluster
Spark with its stdin, stdout and stderr on a pseudo-terminal; a terminal emulator (pyte)
replays what it wrote, and the test reads the screen a user would have seen.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pyte
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLUMNS, LINES = 120, 200  # tall: the whole run stays on the screen, nothing scrolls off

DRIVER = '''
import logging
import sys

sys.path.insert(0, {root!r})
from tests.integration.spark_helpers import start_spark

import tfos

logging.basicConfig(level=logging.WARNING, format="LOG %(name)s: %(message)s")
logging.getLogger("tfos").setLevel(logging.INFO)


def main_fun(args, ctx):
    import time

    for epoch in range(1, 4):
        time.sleep(0.7)
        ctx.report_progress(epoch=epoch, epochs=3, metrics={{"loss": 1.0 / epoch}}, epoch_end=True)


spark = start_spark(2, "tfos-tty")
cluster = tfos.run(spark, main_fun, None, num_executors=2)
cluster.shutdown()
print("RESULT", cluster.run_id, flush=True)
spark.stop()
'''


def _run_in_a_terminal(script: str, timeout_s: float, interrupt_when=None, interrupts: list | None = None
                       ) -> tuple[int, bytes]:
    """Run ``python script`` with a pty as its terminal; its exit code and every byte it wrote there.

    ``interrupt_when()`` true: Ctrl-C as a terminal sends it (SIGINT to the foreground
    process group; pyspark's JVM ignores it), once; its time goes into ``interrupts``."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    env = {k: v for k, v in os.environ.items()
           if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "TFOS_PROGRESS")}
    env.update(TERM="xterm-256color", COLUMNS=str(COLUMNS), LINES=str(LINES))
    proc = subprocess.Popen([sys.executable, script], stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env,
                            start_new_session=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if interrupt_when is not None and interrupts is not None and not interrupts and interrupt_when():
                os.killpg(proc.pid, signal.SIGINT)
                interrupts.append(time.monotonic())
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed its end
                break
            if not chunk:
                break
            out += chunk
        code = proc.wait(max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        raise AssertionError(f"the driver did not end within {timeout_s} s; it wrote:\n"
                             + out.decode("utf-8", "replace")[-3000:]) from None
    finally:
        os.close(master)
    return code, bytes(out)


def _screen(raw: bytes) -> list[str]:
    screen = pyte.Screen(COLUMNS, LINES)
    stream = pyte.ByteStream(screen)
    stream.feed(raw)
    return [line.rstrip() for line in screen.display]


@pytest.mark.slow  # CI time; the live rows are drawn in the default run by tests/unit/test_cluster_interrupt.py (states and progress to the final states) and the example notebook test
def test_rich_draws_one_live_row_per_node_in_a_terminal_and_log_lines_stay_intact_above(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=ROOT))
    code, raw = _run_in_a_terminal(str(script), timeout_s=150)
    screen = _screen(raw)
    shown = "\n".join(line for line in screen if line)
    assert code == 0, shown[-4000:]

    # the rows were redrawn in place (rich's Live: erase the line, cursor up), not appended
    assert b"\x1b[2K" in raw and b"\x1b[1A" in raw, shown[-4000:]
    # one row per node on the final screen, each with its bar, last record and final state
    rows = {line.split()[0]: (i, line) for i, line in enumerate(screen) if re.match(r"(chief|worker):0 ", line)}
    assert sorted(rows) == ["chief:0", "worker:0"], shown[-4000:]
    assert [line for line in screen if line.startswith(("chief:0 ", "worker:0 "))] == [
        rows["chief:0"][1], rows["worker:0"][1]], "a row drawn twice: the redraw tore"
    for node, (_, line) in rows.items():
        assert re.fullmatch(rf"{node} +━+ +epoch 3/3 loss=0\.3333 +done", line), line
    # a frame while training: the row said running
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", raw).decode("utf-8", "replace")
    assert re.search(r"chief:0 +\S+ +epoch [12]/3 loss=\S+ +running", text), text[-4000:]

    # log lines written while the rows were live landed above them, whole (through rich)
    result = next(i for i, line in enumerate(screen) if line.startswith("RESULT "))
    run_id = screen[result].split()[1]
    up = next(i for i, line in enumerate(screen) if line.startswith(f"LOG tfos.cluster: tfos run {run_id}: 2 nodes up"))
    node_lines = [i for i, line in enumerate(screen)
                  if line in ("LOG tfos.nodes: [chief:0] epoch 2/3 loss=0.5", "LOG tfos.nodes: [worker:0] epoch 2/3 loss=0.5")]
    assert len(node_lines) == 2, shown[-4000:]
    assert up < min(node_lines) and max(node_lines) < rows["chief:0"][0] < rows["worker:0"][0] < result, shown[-4000:]


INTERRUPTED_DRIVER = '''
import sys
import time

sys.path.insert(0, {root!r})
from tests.integration.spark_helpers import start_spark

import tfos


def sleep_long(marker_dir, ctx):
    import os
    import time

    with open(os.path.join(marker_dir, f"{{ctx.job_name}}.pid"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)


def quick(args, ctx):
    ctx.report_progress(epoch=1, epochs=1, epoch_end=True)


spark = start_spark(2, "tfos-tty-interrupt")
cluster = tfos.run(spark, sleep_long, {marker_dir!r}, num_executors=2)
try:
    cluster.shutdown()
except KeyboardInterrupt:
    print("INTERRUPTED", time.monotonic(), flush=True)
print(repr(cluster).splitlines()[0], flush=True)
again = tfos.run(spark, quick, None, num_executors=2)
again.shutdown()
print("AGAIN", repr(again).splitlines()[0], flush=True)
spark.stop()
'''


@pytest.mark.slow  # CI time; the interrupt path is checked in the default run by the Connect notebook test and tests/unit/test_cluster_interrupt.py
def test_ctrl_c_in_a_terminal_stops_the_run_in_seconds_and_the_next_run_works(tmp_path):
    from tests.integration.spark_helpers import process_gone, wait_no_node_processes

    markers = tmp_path / "markers"
    markers.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(INTERRUPTED_DRIVER.format(root=ROOT, marker_dir=str(markers)))
    interrupts: list[float] = []
    code, raw = _run_in_a_terminal(str(script), timeout_s=150, interrupts=interrupts,
                                   interrupt_when=lambda: len(list(markers.glob("*.pid"))) == 2)
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", raw).decode("utf-8", "replace")
    assert code == 0 and interrupts, text[-4000:]
    caught = float(re.search(r"INTERRUPTED ([0-9.]+)", text).group(1))
    assert caught - interrupts[0] < 15, caught - interrupts[0]  # KeyboardInterrupt in seconds
    assert re.search(r"Cluster\(run \w+, finished, interrupted, 2 nodes\)", text), text[-4000:]
    assert re.search(r"AGAIN Cluster\(run \w+, finished, 2 nodes\)", text), text[-4000:]
    pids = [int(p.read_text()) for p in markers.glob("*.pid")]
    assert all(process_gone(pid) for pid in pids), pids
    assert wait_no_node_processes() == []
