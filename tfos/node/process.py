"""Supervising child processes one way: polite signal, deadline, kill, reap, output tail,
and never outliving the parent.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import threading

import psutil

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1

# TensorFlow's INFO/WARNING start-up lines (absl format "I0000 00:00:..."), which it prints
# whatever TF_CPP_MIN_LOG_LEVEL says; they would crowd the real error out of a failure's tail
_TF_NOISE = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ |WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions:)"
)


def is_tf_noise(line: str) -> bool:
    """TensorFlow's start-up chatter (absl INFO/WARNING lines; errors such as a failed
    CUDA probe stay: on a GPU machine they are the news)."""
    return bool(_TF_NOISE.match(line))


def die_with_parent(expected_ppid: int | None = None, sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux).

    Returns False when the parent is already not ``expected_ppid`` (it died before the
    request): the caller, a process entry point, should then exit.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        except OSError:  # pragma: no cover - non-glibc systems
            log.debug("prctl unavailable; relying on the watchdog thread")
    return expected_ppid is None or os.getppid() == expected_ppid


def start_group_reaper(watch_fd: int) -> int:
    """Fork a watcher into this process's group that SIGKILLs the whole group once
    ``watch_fd`` (a pipe's read end) reads end-of-file.

    The supervisor keeps the pipe's only write end, so EOF means it is gone, however it
    died (SIGKILL included: nothing has to run in it). The parent-death signal reaches
    only the TF process; this reaches what ``main_fun`` forked or spawned too (and with
    it any copy of the feed listener). A member that starts its own session or process
    group escapes it. The watcher, a member of the group, also keeps the group's id from
    being reused while the supervisor may still signal it. Call it before any thread
    starts; returns the watcher's pid.
    """
    pid = os.fork()
    if pid == 0:
        _reap_group_on_eof(watch_fd)  # never returns
    os.close(watch_fd)
    return pid


def _reap_group_on_eof(watch_fd: int) -> None:
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # the supervisor's polite stop is for the TF process
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # hold none of the TF process's pipes or sockets
            os.dup2(devnull, fd)
        os.closerange(3, watch_fd)
        os.closerange(watch_fd + 1, os.sysconf("SC_OPEN_MAX"))
        while os.read(watch_fd, 4096):
            pass
        os.killpg(0, signal.SIGKILL)  # this watcher included
    finally:
        os._exit(0)


class PidWatch:
    """Calls ``on_gone(pid)`` once, from a daemon thread, when any watched process ends.

    Processes are identified by pid *and* start time, so a recycled pid is not mistaken
    for the original.
    """

    def __init__(self, pids: list[int], on_gone, interval_s: float = 0.5, name: str = "tfos-pid-watch"):
        self._procs = []
        for pid in pids:
            try:
                self._procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                self._procs.append(None)
        self._pids = pids
        self._on_gone = on_gone
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> PidWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for pid, proc in zip(self._pids, self._procs, strict=False):
                if _gone(proc):
                    self._stop.set()
                    self._on_gone(pid)
                    return


def _gone(proc: psutil.Process | None) -> bool:
    # a process reaped between is_running() and status() raises: that, too, means gone
    # (letting it escape would end the watch thread and the watch with it, silently)
    try:
        return proc is None or not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


#: the longest output line kept whole; a child printing megabytes without a newline must
#: not grow its supervisor's memory (the rest of such a line is read and dropped, and counted)
MAX_LINE_BYTES = 64 * 1024


class OutputTail:
    """Reads a child's output stream line by line in a thread, keeping the last lines.

    Each line is also written to ``sink`` prefixed with ``tag`` (the executor's log),
    so the full output is still where Spark users look for it. A line longer than
    ``max_line_bytes`` is cut there, ends in ``[... N more bytes cut]``, and counts in
    :attr:`cut_lines`.
    """

    def __init__(self, stream, tag: str, sink=None, max_lines: int = 200, on_line=None,
                 max_line_bytes: int = MAX_LINE_BYTES):
        self._lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self._max_line = max_line_bytes
        self.cut_lines = 0
        self._on_line = on_line  # also hands each line on (to the driver, best effort)
        self._stream = stream
        self.tag = tag
        self._sink = sink if sink is not None else sys.stderr
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"tfos-tail{tag}", daemon=True)
        self._thread.start()

    def _read_lines(self):
        """The stream's lines, each at most ``max_line_bytes`` (then marked as cut)."""
        read = self._stream.readline
        while raw := read(self._max_line):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if raw.endswith(b"\n") or len(raw) < self._max_line:
                yield line
                continue
            dropped = 0
            while rest := read(self._max_line):  # the rest of the line, bounded reads
                if rest.endswith(b"\n"):
                    dropped += len(rest) - 1
                    break
                dropped += len(rest)
            if dropped:
                self.cut_lines += 1
                line += f" [... {dropped} more bytes cut]"
            yield line

    def _run(self) -> None:
        for line in self._read_lines():
            with self._lock:
                self._lines.append(line)
            if self._on_line is not None:
                self._on_line(line)
            try:
                self._sink.write(f"{self.tag} {line}\n")
                self._sink.flush()
            except (OSError, ValueError):
                pass
        self._stream.close()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def text(self, max_lines: int = 60, drop_noise: bool = True) -> str:
        """The last ``max_lines`` lines; with ``drop_noise``, without TF's start-up chatter."""
        with self._lock:
            lines = list(self._lines)
        if drop_noise:
            lines = [line for line in lines if not is_tf_noise(line)]
        return "\n".join(lines[-max_lines:])


def terminate(proc: subprocess.Popen | None, grace_s: float, what: str = "process") -> int | None:
    """Stop ``proc`` and its process group: SIGTERM, wait ``grace_s``, SIGKILL, reap.

    Returns the exit code (negative signal number when killed); ``None`` if there was
    no process. Never raises for a process that is already gone.
    """
    if proc is None:
        return None
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM for %.1f s; killing it", what, proc.pid, grace_s)
    # kill the group even when the leader exited: its children may not have
    _signal_group(proc, signal.SIGKILL)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
        log.error("%s (pid %d) did not die after SIGKILL", what, proc.pid)
        return None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (exit code {code})"
    return f"exited with code {code}"


def exit_within(code: int, limit_s: float = 10.0) -> None:
    """A child entry point's exit: flush, then ``sys.exit(code)``, but leave anyway after
    ``limit_s``: interpreter teardown runs TF's atexit hooks, which can hang in a process
    that held collectives."""
    sys.stdout.flush()
    sys.stderr.flush()
    guard = threading.Timer(limit_s, os._exit, args=(code,))
    guard.daemon = True
    guard.start()
    sys.exit(code)
