"""Notebooks run headless in a real ipykernel kernel (nbclient): the live progress rows
and the Cluster's repr reach the cell outputs; "interrupt kernel" mid-run ends the cell
with KeyboardInterrupt in seconds and leaves no node process; the next tfos.run in the
same kernel trains.

examples/notebooks/tfos_local.ipynb runs, unchanged, with Spark in the kernel
(local-cluster[2,1,1024]): it trains the digits with live rows and TensorBoard. The
interrupt test takes its set-up cells and adds its own. The same interrupt on a Spark
Connect session runs on the shared Connect server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import urllib.request

import nbclient
import nbformat
import pytest

from tests.integration.spark_helpers import wait_no_node_processes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(ROOT, "examples", "notebooks", "tfos_local.ipynb")
#: how soon after "interrupt kernel" the cell must have ended (stop order, grace, cancel)
INTERRUPT_ENDS_S = 15.0

#: a run whose nodes sleep in main_fun (each writes its pid to the marker dir first)
SLEEPY_RUN = '''
def sleep_long(marker_dir, ctx):
    import os, time
    with open(os.path.join(marker_dir, f"{{ctx.job_name}}.pid"), "w") as f:
        f.write(str(os.getpid()))
    ctx.report_progress(stage="sleeping")
    time.sleep(600)

sleepy = tfos.run(spark, sleep_long, {marker_dir!r}, num_executors=2)
sleepy.shutdown()
'''
#: over Spark Connect: a session on the test's server, and a quick main_fun (no TensorFlow)
CONNECT_SETUP = '''
from pyspark.sql import SparkSession

import tfos

spark = SparkSession.builder.remote({url!r}).getOrCreate()


def main_fun(args, ctx):
    for epoch in range(1, args["epochs"] + 1):
        ctx.report_progress(epoch=epoch, epochs=args["epochs"], metrics={{"loss": 1.0 / epoch}}, epoch_end=True)
'''
THIRD_RUN = '''again = tfos.run(spark, main_fun, {"epochs": 1, "batch_size": 64}, num_executors=2)
again.shutdown()
again'''


@pytest.fixture
def kernel_name(tmp_path, monkeypatch) -> str:
    """A kernelspec for this very Python, in a temp dir on JUPYTER_PATH: on a fresh machine
    ``python3`` may be missing or another interpreter. Jupyter's and IPython's state dirs
    go to the temp dir too (nothing is written to the home directory)."""
    name = "tfos-test-python"
    spec = tmp_path / "jupyter" / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tfos test kernel", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.delenv("TFOS_PROGRESS", raising=False)
    return name


def _code(source: str, *tags: str):
    return nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)} if tags else {})


def _index(nb, text: str) -> int:
    return next(i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and text in cell.source)


def _texts(cell, output_type: str) -> list[str]:
    return [o["data"]["text/plain"] for o in cell.outputs if o["output_type"] == output_type]


def _htmls(cell, output_type: str) -> list[str]:
    return [o["data"].get("text/html", "") for o in cell.outputs if o["output_type"] == output_type]


async def _execute(client, nb, interrupt_at: int, marker_dir) -> float:
    """Run every cell; interrupt cell ``interrupt_at`` once both nodes are in main_fun and
    no node process is left after it. Returns the seconds from the interrupt to the cell's end."""
    ended_after = None
    async with client.async_setup_kernel():
        for index, cell in enumerate(nb.cells):
            if index != interrupt_at:
                await client.async_execute_cell(cell, index)
                continue
            running = asyncio.ensure_future(client.async_execute_cell(cell, index))
            deadline = time.monotonic() + 120
            while len(list(marker_dir.glob("*.pid"))) < 2:
                assert not running.done(), cell.outputs
                assert time.monotonic() < deadline, "the sleeping nodes did not start"
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # into shutdown()'s wait
            sent = time.monotonic()
            await client.km.interrupt_kernel()
            await asyncio.wait_for(running, 60)
            ended_after = time.monotonic() - sent
            left = wait_no_node_processes(timeout_s=5)
            assert left == [], f"node processes left after the interrupt: {left}"
    return ended_after


def _client(nb, kernel_name, tmp_path):
    return nbclient.NotebookClient(nb, kernel_name=kernel_name, timeout=180,
                                   resources={"metadata": {"path": str(tmp_path)}})


async def _execute_each(client, nb, after_cell) -> None:
    """Run every cell in order, calling ``after_cell(index)`` after each, kernel still up."""
    async with client.async_setup_kernel():
        for index, cell in enumerate(nb.cells):
            await client.async_execute_cell(cell, index)
            after_cell(index)


def test_example_notebook_trains_the_digits_with_live_progress_and_tensorboard(kernel_name, tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    run_at, frame_at = _index(nb, "cluster = tfos.run"), _index(nb, "IFrame(cluster.tensorboard_url()")
    answered = {}

    def check_tensorboard(index: int) -> None:
        if index == frame_at:  # the nodes may still train: TensorBoard is up until shutdown()
            (shown,) = _texts(nb.cells[run_at], "execute_result")
            url = re.search(r"TensorBoard: (http://\S+)", shown).group(1)
            deadline = time.monotonic() + 60  # the URL is known at registration; TensorBoard starts after
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=10) as reply:
                        answered[url] = (reply.status, reply.read().decode("utf-8", "replace"))
                        return
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)

    asyncio.run(_execute_each(_client(nb, kernel_name, tmp_path), nb, check_tensorboard))

    # TensorBoard on the chief's executor answered while the run was up, and the cell after
    # the repr shows it inline
    ((url, (status, page)),) = answered.items()
    assert url.startswith("http://127.0.0.1:") and status == 200 and "TensorBoard" in page, (url, status)
    (frame,) = _htmls(nb.cells[frame_at], "execute_result")
    assert f'src="{url}"' in frame and "<iframe" in frame, frame

    run_cell, shutdown_cell = nb.cells[run_at], nb.cells[_index(nb, "cluster.shutdown()")]
    # the live rows: shown where tfos.run ran and again where shutdown() ran, both updated in
    # place (one display id) to the final frame
    for cell in (run_cell, shutdown_cell):
        rows = _texts(cell, "display_data")
        assert len(rows) == 1, cell.outputs
        print(rows[0])
        chief, worker = rows[0].splitlines()
        assert chief.startswith("chief:0   [##########] epoch 8/8") and chief.endswith("  done"), rows
        assert worker.startswith("worker:0  [##########] epoch 8/8") and worker.endswith("  done"), rows
        assert "loss=" in chief and "accuracy=" in chief, rows
        assert '<progress value="8" max="8">' in _htmls(cell, "display_data")[0]
    # the nodes' printed lines, tagged, in the cells' own output with no logging set up; no
    # line per progress record under the live rows
    printed = "".join(o["text"] for i in (run_at, _index(nb, "cluster.shutdown()"))
                      for o in nb.cells[i].outputs if o["output_type"] == "stream")
    print(f"node lines: {printed!r}")
    accuracies = dict(re.findall(r"\[(chief:0|worker:0)\] \w+ done: test accuracy ([0-9.]+)", printed))
    assert set(accuracies) == {"chief:0", "worker:0"}, printed
    assert min(float(a) for a in accuracies.values()) > 0.8, accuracies  # it learned the digits
    assert "epoch 1/8" not in printed and "Warning" not in printed, printed
    # the Cluster's repr and its HTML table, as the cells' results, with the TensorBoard link
    (running,) = _texts(run_cell, "execute_result")
    assert running.startswith("Cluster(run ") and ", ready, 2 nodes)" in running.splitlines()[0], running
    assert running.splitlines()[1].startswith("  chief:0   127.0.0.1:"), running
    (table,) = _htmls(run_cell, "execute_result")
    assert "<table>" in table and "<b>worker:0</b>" in table and f'<a href="{url}"' in table, table
    (finished,) = _texts(shutdown_cell, "execute_result")
    assert ", finished, 2 nodes)" in finished.splitlines()[0] and finished.count("  done") == 2, finished
    # what TensorBoard read: the chief's train and validation event files
    (events,) = _texts(nb.cells[_index(nb, "events.out.tfevents")], "execute_result")
    assert "'train/events.out.tfevents." in events and "'validation/events.out.tfevents." in events, events
    assert wait_no_node_processes(timeout_s=5) == []


def _interrupt_then_run_again(setup_cells, kernel_name, tmp_path, label: str) -> nbformat.NotebookNode:
    """Run ``setup_cells``, a run interrupted in shutdown(), its repr, a third run and
    ``spark.stop()``; check the interrupt; return the third run's cell."""
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        *setup_cells,
        _code(SLEEPY_RUN.format(marker_dir=str(marker_dir)), "raises-exception"),
        _code("print(repr(sleepy))"),
        _code(THIRD_RUN),
        _code("spark.stop()"),
    ])
    interrupted = _index(nb, "sleepy = tfos.run")
    ended_after = asyncio.run(_execute(_client(nb, kernel_name, tmp_path), nb, interrupted, marker_dir))

    errors = [o for o in nb.cells[interrupted].outputs if o["output_type"] == "error"]
    assert [e["ename"] for e in errors] == ["KeyboardInterrupt"], nb.cells[interrupted].outputs
    assert ended_after < INTERRUPT_ENDS_S, ended_after
    print(f"{label}: interrupt -> KeyboardInterrupt in {ended_after:.1f} s")
    (said,) = [o["text"] for o in nb.cells[interrupted + 1].outputs if o["output_type"] == "stream"]
    assert ", interrupted, 2 nodes)" in said.splitlines()[0], said
    # the same kernel trains again
    again_cell = nb.cells[_index(nb, "again = tfos.run")]
    (again,) = _texts(again_cell, "execute_result")
    assert ", finished, 2 nodes)" in again.splitlines()[0] and again.count("  done") == 2, again
    return again_cell


@pytest.mark.slow  # CI time; a kernel's interrupt and second run are checked in the default run by the Spark Connect notebook test
def test_interrupt_kernel_stops_a_classic_run_in_seconds_and_the_next_run_trains(kernel_name, tmp_path):
    example = nbformat.read(NOTEBOOK, as_version=4)
    setup = [example.cells[_index(example, "SparkSession.builder")], example.cells[_index(example, "def main_fun")]]
    _interrupt_then_run_again(setup, kernel_name, tmp_path, "classic")


def test_over_spark_connect_interrupt_kernel_stops_the_run_in_seconds_and_the_next_run_works(
        kernel_name, tmp_path, connect_server):
    again_cell = _interrupt_then_run_again([_code(CONNECT_SETUP.format(url=connect_server.url))],
                                           kernel_name, tmp_path, "Spark Connect")
    (rows,) = _texts(again_cell, "display_data")
    assert rows == ("chief:0   [##########] epoch 1/1 loss=1  done\n"
                    "worker:0  [##########] epoch 1/1 loss=1  done"), rows
