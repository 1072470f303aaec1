"""TensorFlowOnSpark's ``gpu_info``: which GPUs this process may use.

Under tfos the GPUs of a node come from Spark's resource scheduling, and the node's process
starts with ``CUDA_VISIBLE_DEVICES`` holding exactly those (see :mod:`tfos.node.gpus`).
So :func:`get_gpus` answers from ``CUDA_VISIBLE_DEVICES`` when it is set, and a script that
then exports the answer as ``CUDA_VISIBLE_DEVICES`` (as TensorFlowOnSpark scripts did)
changes nothing. Only where nothing set it (a driver, a plain Spark task without GPU
scheduling) does it ask ``nvidia-smi`` for GPUs no process computes on, as TensorFlowOnSpark did.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time

from tfos.errors import ConfigError, TfosError

log = logging.getLogger(__name__)

#: ``format=`` values: a comma-separated string ("0,1") or a list (["0", "1"])
AS_STRING = "string"
AS_LIST = "list"

#: attempts, and seconds between them, when nvidia-smi shows too few idle GPUs (others may be exiting)
_ATTEMPTS = 3
_RETRY_S = 5.0
_TIMEOUT_S = 30.0


class GPUUnavailable(TfosError):
    """Fewer GPUs than requested are available to this process."""


def is_gpu_available() -> bool:
    """True when this process may use at least one GPU (no TensorFlow import)."""
    visible = _visible()
    if visible is not None:
        return bool(visible)
    return bool(_nvidia_smi_gpus())


def get_gpus(num_gpu: int = 1, worker_index: int = -1, format: str = AS_STRING):  # noqa: A002 - TFoS's name
    """``num_gpu`` GPUs for this process, as ``"0,1"`` (``AS_STRING``) or ``["0", "1"]`` (``AS_LIST``).

    From ``CUDA_VISIBLE_DEVICES`` when set (under tfos: the GPUs Spark gave the node), else
    the idle GPUs ``nvidia-smi`` lists; ``worker_index`` (>= 0) starts the choice at GPU
    ``worker_index * num_gpu`` so that processes sharing a host pick different GPUs.

    Raises:
        ValueError: ``num_gpu`` below 1 or an unknown ``format``.
        GPUUnavailable: fewer than ``num_gpu`` GPUs (the message lists what was found).
    """
    if not isinstance(num_gpu, int) or isinstance(num_gpu, bool) or num_gpu < 1:
        raise ConfigError(f"get_gpus(num_gpu) needs a positive int; received: {num_gpu!r}")
    if format not in (AS_STRING, AS_LIST):
        raise ConfigError(f"get_gpus(format=) must be gpu_info.AS_STRING or gpu_info.AS_LIST; received: {format!r}")
    visible = _visible()
    if visible is not None:
        if len(visible) < num_gpu:
            raise GPUUnavailable(
                f"{num_gpu} GPU(s) requested, but CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} "
                f"gives this process {len(visible)}: under tfos a node's GPUs come from Spark "
                f"(spark.executor.resource.gpu.amount, spark.task.resource.gpu.amount)"
            )
        return _formatted(visible[:num_gpu], format)
    for attempt in range(_ATTEMPTS):
        gpus = _nvidia_smi_gpus()
        busy = _busy_uuids()
        idle = [index for index, uuid in gpus if uuid not in busy]
        if len(idle) >= num_gpu:
            start = (worker_index * num_gpu) % len(idle) if worker_index >= 0 else 0
            chosen = (idle[start:] + idle[:start])[:num_gpu]
            return _formatted(chosen, format)
        if attempt + 1 < _ATTEMPTS:
            log.info("get_gpus: %d idle GPU(s) of %d, %d requested; retrying in %.0f s",
                     len(idle), len(gpus), num_gpu, _RETRY_S)
            time.sleep(_RETRY_S)
    raise GPUUnavailable(
        f"{num_gpu} GPU(s) requested, but nvidia-smi lists {len(gpus)} GPU(s), {len(idle)} of them idle "
        f"({', '.join(idle) or 'none'})" + ("" if gpus else ": is nvidia-smi on PATH and a GPU present?")
    )


def _visible() -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES``; ``None`` when it is unset."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [entry.strip() for entry in value.split(",") if entry.strip() and entry.strip() != "-1"]


def _nvidia_smi_gpus() -> list[tuple[str, str]]:
    """``(index, uuid)`` of every GPU nvidia-smi lists; empty without nvidia-smi."""
    rows = _nvidia_smi("--query-gpu=index,uuid")
    return [(row[0], row[1]) for row in rows if len(row) >= 2]


def _busy_uuids() -> set[str]:
    """UUIDs of the GPUs some process computes on."""
    return {row[0] for row in _nvidia_smi("--query-compute-apps=gpu_uuid") if row}


def _nvidia_smi(query: str) -> list[list[str]]:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        out = subprocess.run([binary, query, "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=_TIMEOUT_S, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi %s failed: %s", query, exc)
        return []
    return [[cell.strip() for cell in line.split(",")] for line in out.splitlines() if line.strip()]


def _formatted(gpus: list[str], format: str):  # noqa: A002
    return list(gpus) if format == AS_LIST else ",".join(gpus)


__all__ = ["AS_LIST", "AS_STRING", "GPUUnavailable", "get_gpus", "is_gpu_available"]
