"""What a ``--master`` URL names: the cluster manager, and whether it is this machine.

Pure classification; :class:`tfos.submit.config.SubmitConfig` refuses the kinds tfos cannot
run on. The local master regexes are :mod:`tfos.spark.env`'s, their one home.
"""

from __future__ import annotations

from tfos.spark.env import LOCAL_CLUSTER_MASTER, LOCAL_MASTER, is_loopback_master

#: what each kind is called in messages
KIND_NAMES = {"embedded": "the embedded local-cluster", "local-cluster": "local-cluster",
              "yarn": "YARN", "k8s": "Kubernetes", "standalone": "a standalone master"}


def master_kind(master: str | None) -> str | None:
    """``embedded`` (None: no --master), ``local-cluster``, ``standalone``, ``yarn``, ``k8s``,
    ``local`` (``local[...]``: no executor processes), or None for a URL of no known kind."""
    if master is None:
        return "embedded"
    if LOCAL_CLUSTER_MASTER.match(master):
        return "local-cluster"
    if master.startswith("spark://"):
        return "standalone"
    if master == "yarn":
        return "yarn"
    if master.startswith("k8s://"):
        return "k8s"
    if LOCAL_MASTER.match(master):
        return "local"
    return None


__all__ = ["KIND_NAMES", "is_loopback_master", "master_kind"]
