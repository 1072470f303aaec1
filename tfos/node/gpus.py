"""GPUs a node may use: Spark's resource scheduling decides, tfos maps it into
``CUDA_VISIBLE_DEVICES`` for the TF process.

Spark hands a task GPU *addresses* (from the executor's discovery script, usually
``nvidia-smi`` indexes). When the executor's environment already narrows the GPUs
(``CUDA_VISIBLE_DEVICES=2,3`` set by a container runtime or ``spark.executorEnv``), an
address is either one of those entries (kept as is) or an index into them (mapped:
``1`` -> ``3``): CUDA numbers the GPUs it sees from 0, so handing the TF process the raw
index would pick the wrong GPU.
"""

from __future__ import annotations

import re

from tfos.errors import ConfigError

_ADDRESS = re.compile(r"^(\d+|(GPU|MIG)-[0-9A-Za-z./-]+)$")


def task_gpus() -> list[str]:
    """The GPU addresses Spark assigned to the running task (empty without GPU scheduling)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return []
    gpu = context.resources().get("gpu")
    return list(gpu.addresses) if gpu is not None else []


def cuda_visible_devices(assigned: list[str], existing: str | None) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` value for a node given Spark's ``assigned`` addresses.

    ``None`` means leave the environment alone (Spark assigned no GPU). Raises
    ``ConfigError`` for addresses that are not GPU indexes or UUIDs, duplicates, or
    indexes that the existing ``CUDA_VISIBLE_DEVICES`` does not have.
    """
    if not assigned:
        return None
    addresses = [a.strip() for a in assigned]
    bad = [a for a in addresses if not _ADDRESS.match(a)]
    if bad:
        raise ConfigError(f"Spark assigned GPU address(es) {bad} to this node; a GPU address must be an "
                          f"index (0, 1, ...) or a GPU-/MIG- UUID: check the GPU discovery script's output")
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"Spark assigned the same GPU twice to this node: {addresses}")
    visible = [v.strip() for v in (existing or "").split(",") if v.strip()]
    if not visible:
        return ",".join(addresses)
    out = []
    for address in addresses:
        if address in visible:
            out.append(address)
        elif address.isdigit() and int(address) < len(visible):
            out.append(visible[int(address)])
        else:
            raise ConfigError(
                f"Spark assigned GPU {address} to this node, but the executor's CUDA_VISIBLE_DEVICES={existing!r} "
                f"has no such GPU (neither an entry nor an index into it): make the GPU discovery script "
                f"report the GPUs this executor can see"
            )
    return ",".join(out)
