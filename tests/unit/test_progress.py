"""The driver's live progress display: which one a driver gets (terminal, notebook, none),
and the notebook's rows, updates and throttle, on a fake ``IPython.display.display``.

The terminal display is drawn in a real pseudo-terminal by tests/integration/test_tty_display.py.
"""

from __future__ import annotations

import sys
import time
import types

import pytest

from tfos import progress
from tfos.progress import NotebookDisplay, describe, display_kind, live_display


class _Stream:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class _Shell:
    """IPython's shell as tfos reads it: a kernel (a Jupyter kernel's ZMQ shell) and the cell number."""

    def __init__(self, kernel: bool = True, execution_count: int = 1):
        self.kernel = object() if kernel else None
        self.execution_count = execution_count


@pytest.mark.parametrize(("env", "kernel", "tty", "kind"), [
    ("", True, False, "notebook"),
    ("", True, True, "notebook"),  # a kernel started from a terminal: its output is the notebook's
    ("", False, True, "terminal"),
    ("", False, False, "none"),  # a pipe or a file: the log lines are the display
    ("off", True, True, "none"),
    ("0", False, True, "none"),
    (" False ", False, True, "none"),
    ("on", False, True, "terminal"),
])
def test_display_kind_is_the_notebook_in_a_kernel_else_the_terminal_on_a_tty_else_none(
        monkeypatch, env, kernel, tty, kind):
    monkeypatch.setenv("TFOS_PROGRESS", env)
    monkeypatch.setattr(progress, "_kernel_shell", lambda: _Shell() if kernel else None)
    monkeypatch.setattr(sys, "stderr", _Stream(tty))
    assert display_kind() == kind


def test_no_display_is_made_when_there_is_none_to_show(monkeypatch):
    monkeypatch.delenv("TFOS_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "_kernel_shell", lambda: None)
    monkeypatch.setattr(sys, "stderr", _Stream(False))
    assert live_display() is None


@pytest.mark.parametrize(("ipython", "kernel"), [
    (None, False),  # IPython never imported: no notebook (and it is not imported to find out)
    (_Shell(kernel=True), True),  # ipykernel's ZMQ shell
    (_Shell(kernel=False), False),  # a terminal IPython
    ("no shell", False),  # IPython imported, no shell running
])
def test_a_kernel_is_an_ipython_shell_with_a_kernel(monkeypatch, ipython, kernel):
    if ipython is None:
        monkeypatch.delitem(sys.modules, "IPython", raising=False)
    else:
        fake = types.ModuleType("IPython")
        fake.get_ipython = lambda: None if ipython == "no shell" else ipython
        monkeypatch.setitem(sys.modules, "IPython", fake)
    assert NotebookDisplay.wanted() is kernel


class _Display:
    """``IPython.display.display`` as NotebookDisplay calls it: each call kept."""

    def __init__(self):
        self.calls: list[tuple[dict, str, bool]] = []

    def __call__(self, bundle, raw, display_id, update):
        assert raw is True
        self.calls.append((bundle, display_id, update))

    @property
    def last_text(self) -> str:
        return self.calls[-1][0]["text/plain"]


@pytest.fixture
def shell(monkeypatch):
    shell = _Shell(execution_count=3)
    monkeypatch.setattr(progress, "_kernel_shell", lambda: shell)
    return shell


def test_notebook_rows_show_each_nodes_bar_progress_and_state(shell):
    shown = _Display()
    display = NotebookDisplay(min_interval_s=0, display=shown)
    assert shown.calls == [({"text/plain": "tfos: waiting for the nodes",
                             "text/html": "<pre>tfos: waiting for the nodes</pre>"}, display.display_id, False)]
    display.set_states({"chief:0": "registered", "worker:0": "unregistered"})
    assert shown.last_text == "chief:0   registered\nworker:0  unregistered"
    display.set_states({"chief:0": "running", "worker:0": "running"})
    display.update("worker:0", {"epoch": 2, "epochs": 4, "metrics": {"loss": 0.3125}, "epoch_end": True})
    assert shown.last_text == ("chief:0   running\n"
                               "worker:0  [#####-----] epoch 2/4 loss=0.3125  running")
    assert shown.calls[-1][0]["text/html"] == (
        '<table class="tfos-progress">'
        "<tr><td><b>chief:0</b></td><td></td><td><code></code></td><td>running</td></tr>"
        '<tr><td><b>worker:0</b></td><td><progress value="2" max="4"></progress></td>'
        "<td><code>epoch 2/4 loss=0.3125</code></td><td>running</td></tr></table>")
    assert {call[1] for call in shown.calls} == {display.display_id}
    assert [call[2] for call in shown.calls] == [False, True, True, True]  # shown once, then updated


def test_notebook_html_escapes_what_the_nodes_sent(shell):
    shown = _Display()
    display = NotebookDisplay(min_interval_s=0, display=shown)
    display.update("chief:0", {"stage": "<script>x</script>"})
    assert "<script>" not in shown.calls[-1][0]["text/html"]
    assert "&lt;script&gt;x&lt;/script&gt;" in shown.calls[-1][0]["text/html"]


def test_notebook_sends_at_most_one_update_per_interval_and_then_the_last(shell):
    shown = _Display()
    display = NotebookDisplay(min_interval_s=0.3, display=shown)
    for step in range(1, 21):
        display.update("chief:0", {"step": step, "steps": 20})
    assert len(shown.calls) == 1  # the first show; the updates wait for the interval
    deadline = time.monotonic() + 5
    while len(shown.calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.4)
    assert len(shown.calls) == 2
    assert shown.last_text == f"chief:0  {describe({'step': 20, 'steps': 20})}"


def test_notebook_close_sends_the_final_states_and_nothing_after(shell):
    shown = _Display()
    display = NotebookDisplay(min_interval_s=60, display=shown)
    display.update("chief:0", {"epoch": 3, "epochs": 3, "epoch_end": True})
    display.close({"chief:0": "done"})
    assert shown.last_text == "chief:0  [##########] epoch 3/3  done"
    calls = len(shown.calls)
    display.update("chief:0", {"epoch": 9})
    display.set_states({"chief:0": "lost"})
    display.show()
    display.close({"chief:0": "failed"})
    assert len(shown.calls) == calls


def test_notebook_show_shows_the_rows_once_per_cell(shell):
    shown = _Display()
    display = NotebookDisplay(min_interval_s=0, display=shown)  # cell 3: tfos.run
    display.show()  # shutdown() in the same cell
    assert [call[2] for call in shown.calls] == [False]
    shell.execution_count = 4  # shutdown() in the next cell
    display.show()
    assert [call[2] for call in shown.calls] == [False, False]
    assert {call[1] for call in shown.calls} == {display.display_id}  # updates reach both


def test_a_kernel_that_refuses_output_ends_the_display_quietly(shell):
    calls = []

    def refusing(bundle, raw, display_id, update):
        calls.append(update)
        if update:
            raise RuntimeError("kernel shutting down")

    display = NotebookDisplay(min_interval_s=0, display=refusing)
    display.update("chief:0", {"epoch": 1})
    display.update("chief:0", {"epoch": 2})
    display.close({"chief:0": "done"})
    assert calls == [False, True]


# ------------------------------------------------------------------ node lines


@pytest.fixture
def bare_logging(monkeypatch):
    """Logging as a notebook kernel or a plain script has it: no handler anywhere, tfos.nodes
    at NOTSET. The root's handlers are pytest's capture handlers, which pytest adds for each
    phase of a test: patched to none for the test's own phase."""
    import io
    import logging

    root, nodes = logging.getLogger(), logging.getLogger(progress.NODE_LOGGER)
    monkeypatch.setattr(nodes, "handlers", [])
    monkeypatch.setattr(nodes, "level", logging.NOTSET)
    out = io.StringIO()
    monkeypatch.delenv("TFOS_NODE_LINES", raising=False)

    def bare():  # in the test's phase: pytest sets sys.stdout and the root's handlers per phase
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(root, "handlers", [])
        nodes.manager._clear_cache()  # levels are cached per logger

    yield out, root, nodes, bare


def test_node_lines_print_on_stdout_when_nothing_else_would(bare_logging):
    out, _root, nodes, bare = bare_logging
    bare()
    progress.show_node_lines()
    progress.show_node_lines()  # once per process: one line each, not two
    nodes.info("[%s] %s", "worker:1", "step 3")
    assert out.getvalue() == "[worker:1] step 3\n"


def test_node_lines_follow_sys_stdout_as_it_is_at_each_line(bare_logging, monkeypatch):
    import io

    _out, _root, nodes, bare = bare_logging
    bare()
    progress.show_node_lines()
    later = io.StringIO()  # a kernel's next cell, rich's stand-in while a display is live
    monkeypatch.setattr(sys, "stdout", later)
    nodes.info("[chief:0] saved")
    assert later.getvalue() == "[chief:0] saved\n"


def test_a_user_who_configured_logging_keeps_their_handlers_and_sees_each_line_once(bare_logging):
    import io
    import logging

    out, root, nodes, bare = bare_logging
    bare()
    progress.show_node_lines()  # nothing configured yet: tfos's handler goes on
    theirs = io.StringIO()
    root.addHandler(logging.StreamHandler(theirs))  # basicConfig after tfos.run
    nodes.info("[chief:0] epoch 1")
    assert theirs.getvalue() == "[chief:0] epoch 1\n" and out.getvalue() == ""


def test_configured_logging_or_the_off_switch_adds_no_handler(bare_logging, monkeypatch):
    import logging

    _out, root, nodes, bare = bare_logging
    bare()
    root.addHandler(logging.NullHandler())
    progress.show_node_lines()
    assert nodes.handlers == []
    root.handlers[:] = []
    monkeypatch.setenv("TFOS_NODE_LINES", "off")
    progress.show_node_lines()
    assert nodes.handlers == []


def test_progress_lines_are_left_to_a_live_display_and_printed_without_one(bare_logging, monkeypatch):
    out, _root, nodes, bare = bare_logging
    bare()
    progress.show_node_lines()
    monkeypatch.setattr(progress, "display_kind", lambda: "notebook")
    nodes.info("[chief:0] epoch 1/3", extra={progress.PROGRESS_FLAG: True})
    nodes.info("[chief:0] a line main_fun printed")
    monkeypatch.setattr(progress, "display_kind", lambda: "none")
    nodes.info("[chief:0] epoch 2/3", extra={progress.PROGRESS_FLAG: True})
    assert out.getvalue() == "[chief:0] a line main_fun printed\n[chief:0] epoch 2/3\n"
