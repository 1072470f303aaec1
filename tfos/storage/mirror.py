"""A node's local directories, mirrored to the run's storage and restored from it.

Keras, TensorFlow checkpoints and TensorBoard write to local files; TensorFlow 2.21 cannot
write ``hdfs://`` or ``s3://``. With ``tfos.run(..., storage=URI)`` each node gets a local
root (``ctx.local_dir(name)`` makes ``<root>/<name>``). The lead node's root (the chief,
or ``worker:0`` without one: the node that writes checkpoints, exports and events) is
mirrored to ``URI/<name>/...`` by its supervisor: every few seconds while the run goes,
and completely once the TF process has ended, before the node reports its end, so
``shutdown()`` returns only after everything is in storage. A mirror that cannot finish
fails the node, naming the files not saved.

The promise: after ``shutdown()`` returns, storage holds exactly the lead node's local
tree (files deleted locally are deleted remotely). While the run goes, storage lags by
at most one interval; a file is uploaded whole (the multipart upload is committed only
when the file is complete), and each pass uploads TensorFlow's ``checkpoint`` pointer
files and ``*.index`` files after the data files they point to, so a restore never sees
a pointer to a checkpoint that is not there.

Restoring: the first ``ctx.local_dir(name)`` on any node of a run with storage downloads
``URI/<name>`` into it (a restart after ``max_restarts``, or a later run with the same
``storage``), so ``BackupAndRestore`` and ``CheckpointManager`` resume on a cluster.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field

from tfos.errors import StorageError
from tfos.storage.filesystems import COPY_CHUNK, download, redact, resolve, storage_error

log = logging.getLogger(__name__)

#: seconds between mirror passes while the run goes
INTERVAL_S = 5.0
#: seconds a failed run's teardown waits for the lead node's last pass (and the supervisor
#: gives that pass when its Spark task is gone)
FINAL_PASS_S = 60.0
#: written by a restore: the files it put there, so the mirror does not upload them back
RESTORED_MANIFEST = ".tfos-restored.json"


@dataclass
class SyncReport:
    uploaded: int = 0
    deleted: int = 0
    bytes: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # relative path -> reason


class Mirror:
    """Keeps ``remote`` equal to the tree under ``local_root`` (one direction: up)."""

    def __init__(self, local_root: str, remote: str):
        self.local_root = local_root
        self.remote = remote.rstrip("/")
        self._location = resolve(self.remote)
        self._uploaded: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) now in storage
        self._lock = threading.Lock()  # one pass at a time
        self._stop = threading.Event()
        #: how long finish() waits for a periodic pass in progress (one stuck on storage that
        #: stopped answering fails the node instead of hanging it)
        self.finish_timeout_s = FINAL_PASS_S
        self._thread: threading.Thread | None = None
        self._finished = False
        self.totals = SyncReport()

    def start(self, interval_s: float = INTERVAL_S) -> None:
        """Mirror every ``interval_s`` in a thread until :meth:`finish`."""
        def loop():
            while not self._stop.wait(interval_s):
                report = self.sync()
                for rel, reason in report.failed.items():
                    log.warning("mirror: %s not saved yet (retried): %s", rel, reason)

        self._thread = threading.Thread(target=loop, name="tfos-mirror", daemon=True)
        self._thread.start()

    def finish(self) -> SyncReport:
        """Stop the periodic passes and run the last one; raises when a file is not saved.

        Raises:
            StorageError: naming the files that are not in storage, and why.
        """
        with self._lock:
            if self._finished:  # once: the local tree may be gone after the last pass
                return SyncReport()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.finish_timeout_s)
            if self._thread.is_alive():  # a pass stuck on storage that stopped answering
                raise StorageError(f"the mirror's pass to {redact(self.remote)} did not end in "
                                   f"{self.finish_timeout_s:g} s (is the storage answering?); the node's "
                                   f"last files are not confirmed saved")
        report = self.sync()
        if report.failed:
            listed = "; ".join(f"{rel}: {reason}" for rel, reason in sorted(report.failed.items())[:5])
            more = f" (and {len(report.failed) - 5} more)" if len(report.failed) > 5 else ""
            raise StorageError(f"could not save {len(report.failed)} file(s) to {redact(self.remote)}: "
                               f"{listed}{more}")
        with self._lock:
            self._finished = True
        log.info("mirror: %s holds the node's %d file(s) (%d uploaded, %.1f MB, %d deleted in this run)",
                 redact(self.remote), len(self._uploaded), self.totals.uploaded, self.totals.bytes / 1e6,
                 self.totals.deleted)
        return report

    def sync(self) -> SyncReport:
        """One pass: upload new and changed files, delete what went locally."""
        with self._lock:
            report = SyncReport()
            if self._finished or not os.path.isdir(self.local_root):
                return report  # no tree (removed, or never made): nothing to send, nothing to delete
            local = self._scan()
            self._seed_restored()
            changed = [rel for rel, stat in local.items() if self._uploaded.get(rel) != stat]
            for rel in sorted(changed, key=_upload_order):
                try:
                    self._upload(rel, local[rel], report)
                except StorageError as exc:
                    report.failed[rel] = str(exc)
            for rel in sorted(set(self._uploaded) - set(local)):
                try:
                    self._location.fs.delete_file(self._remote_path(rel))
                except FileNotFoundError:
                    pass
                except (OSError, ValueError) as exc:
                    report.failed[rel] = str(storage_error("delete", self._remote_uri(rel), exc))
                    continue
                del self._uploaded[rel]
                report.deleted += 1
            self.totals.uploaded += report.uploaded
            self.totals.bytes += report.bytes
            self.totals.deleted += report.deleted
            return report

    # ------------------------------------------------------------------ internals

    def _scan(self) -> dict[str, tuple[int, int]]:
        found = {}
        for directory, _dirs, files in os.walk(self.local_root):
            for name in files:
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, self.local_root).replace(os.sep, "/")
                if rel == RESTORED_MANIFEST:
                    continue
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue  # deleted while we looked
                found[rel] = (st.st_size, st.st_mtime_ns)
        return found

    def _seed_restored(self) -> None:
        """Files a restore downloaded are in storage, as they were restored: if they changed
        since they are uploaded again, if they went they are deleted there."""
        path = os.path.join(self.local_root, RESTORED_MANIFEST)
        try:
            with open(path, encoding="utf-8") as f:
                restored = json.load(f)
            os.remove(path)
        except (OSError, ValueError):
            return
        for rel, stat in restored.items():
            self._uploaded.setdefault(rel, tuple(stat))

    def _upload(self, rel: str, stat: tuple[int, int], report: SyncReport) -> None:
        source = os.path.join(self.local_root, rel)
        target = self._remote_path(rel)
        try:
            parent = target.rsplit("/", 1)[0]
            self._location.fs.create_dir(parent, recursive=True)
            with open(source, "rb") as src, self._location.fs.open_output_stream(target) as dst:
                while True:
                    chunk = src.read(COPY_CHUNK)
                    if not chunk:
                        break
                    dst.write(chunk)
        except FileNotFoundError:
            return  # gone locally before we read it: the next pass deletes it remotely
        except (OSError, ValueError) as exc:
            raise storage_error("write", self._remote_uri(rel), exc) from None
        try:
            after = os.stat(source)
        except FileNotFoundError:
            return
        if (after.st_size, after.st_mtime_ns) == stat:  # else it changed while uploading: next pass
            self._uploaded[rel] = stat
        report.uploaded += 1
        report.bytes += stat[0]

    def _remote_path(self, rel: str) -> str:
        return f"{self._location.path.rstrip('/')}/{rel}"

    def _remote_uri(self, rel: str) -> str:
        return f"{self.remote}/{rel}"


def restore(remote: str, local_dir: str) -> int:
    """Download the tree under ``remote`` into ``local_dir``; returns ``{relative path: (size, mtime_ns)}``.

    Nothing there is not an error (a first run). Writes the manifest that keeps the
    mirror from uploading the same files back.

    Raises:
        StorageError: storage cannot be listed or a file cannot be read (named).
    """
    import pyarrow.fs as pafs

    location = resolve(remote)
    base = location.path.rstrip("/")
    try:
        infos = location.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except (OSError, ValueError) as exc:
        raise storage_error("list", remote, exc) from None
    restored = {}
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base):].lstrip("/")
        target = os.path.join(local_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        download(f"{remote.rstrip('/')}/{rel}", target, location.fs, info.path)
        st = os.stat(target)
        restored[rel] = (st.st_size, st.st_mtime_ns)
    return restored


def write_restored_manifest(local_root: str, name: str, restored: dict[str, tuple[int, int]]) -> None:
    """Record (under the mirrored root) which files a restore of ``name`` put there."""
    path = os.path.join(local_root, RESTORED_MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        manifest = {}
    manifest.update({f"{name}/{rel}": list(stat) for rel, stat in restored.items()})
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    os.replace(path + ".tmp", path)


def _upload_order(rel: str) -> tuple[int, str]:
    """Data files first, then the files that point at them (TF's ``checkpoint``, ``*.index``)."""
    name = rel.rsplit("/", 1)[-1]
    pointer = name == "checkpoint" or name.endswith(".index") or name == "saved_model.pb"
    return (1 if pointer else 0, rel)
