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


def _run_in_a_terminal(script: str, timeout_s: float) -> tuple[int, bytes]:
    """Run ``python script`` with a pty as its terminal; its exit code and every byte it wrote there."""
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
