"""Role planning: which node slot becomes ps, chief, evaluator or worker.

Pure functions, so the plan is deterministic and unit-testable: slot ``i`` (the
Spark partition index of the node task) always gets the same role for the same
arguments. Order: ``num_ps`` ps, then the chief (``master_node``), then one
evaluator if asked, then workers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tfos.errors import ConfigError

#: the chief's job name: TF 2's "chief", or TF 1's (and TensorFlowOnSpark's) "master"
CHIEF_JOBS = ("chief", "master")
WORKER_JOB = "worker"
#: parameter servers: they serve variables (``ctx.serve()``) and run no user loop
PS_JOB = "ps"
#: the evaluator: outside the TF cluster spec, never fed
EVALUATOR_JOB = "evaluator"
TRAINING_JOBS = (*CHIEF_JOBS, WORKER_JOB)


@dataclass(frozen=True)
class Role:
    job_name: str
    task_index: int

    def __str__(self) -> str:
        return f"{self.job_name}:{self.task_index}"

    @property
    def trains(self) -> bool:
        """A chief or worker: the nodes that run the training loop, the only ones SPARK mode feeds."""
        return self.job_name in TRAINING_JOBS

    @property
    def is_ps(self) -> bool:
        """A parameter server: tfos serves it (``ctx.serve()``) instead of calling ``main_fun``."""
        return self.job_name == PS_JOB


def plan_roles(
    num_executors: int, num_ps: int = 0, master_node: str | None = "chief", eval_node: bool = False
) -> list[Role]:
    """Return one role per node slot.

    Raises:
        ConfigError: when the counts leave no node to train.
    """
    reserved = num_ps + (1 if master_node else 0) + (1 if eval_node else 0)
    num_workers = num_executors - reserved
    if num_workers < 0 or (num_workers == 0 and not master_node):
        raise ConfigError(
            f"num_executors={num_executors} is too small for num_ps={num_ps}, "
            f"master_node={master_node!r}, eval_node={eval_node}: it leaves no node to train; "
            f"use num_executors >= {reserved + (0 if master_node else 1)}"
        )
    roles = [Role(PS_JOB, i) for i in range(num_ps)]
    if master_node:
        roles.append(Role(master_node, 0))
    if eval_node:
        roles.append(Role(EVALUATOR_JOB, 0))
    roles.extend(Role(WORKER_JOB, i) for i in range(num_workers))
    return roles


def cluster_spec(roles: list[Role], addresses: list[str]) -> dict[str, list[str]]:
    """Build the TF cluster spec (job -> ordered addresses) for slots with ``addresses``.

    The evaluator is left out, as TF expects: it is not part of the training cluster.
    """
    spec: dict[str, list[str]] = {}
    for role, address in sorted(zip(roles, addresses, strict=True), key=lambda ra: ra[0].task_index):
        if role.job_name == EVALUATOR_JOB:
            continue
        spec.setdefault(role.job_name, []).append(address)
    return spec


def tf_config(spec: dict[str, list[str]], role: Role) -> dict:
    """The ``TF_CONFIG`` dict for one node."""
    return {
        "cluster": spec,
        "task": {"type": role.job_name, "index": role.task_index},
    }


def training_rank(roles: list[Role], role: Role) -> tuple[int, int]:
    """(worker_num, num_workers) among training nodes, chief first; worker_num -1 for others.

    This is what data sharding wants: chief and workers each take one shard.
    """
    training = [r for r in roles if r.job_name in TRAINING_JOBS]
    training.sort(key=lambda r: (0 if r.job_name in CHIEF_JOBS else 1, r.task_index))
    num = len(training)
    return (training.index(role) if role in training else -1), num


def lead_slot(roles: list[Role]) -> int:
    """The lead node: it writes checkpoints, exports and summaries, runs TensorBoard, and
    coordinates under ParameterServerStrategy. The chief (or master), else ``worker:0``,
    else slot 0."""
    for job in CHIEF_JOBS:
        for i, r in enumerate(roles):
            if r.job_name == job:
                return i
    for i, r in enumerate(roles):
        if r.job_name == WORKER_JOB and r.task_index == 0:
            return i
    return 0


def is_lead(role: Role, jobs: Iterable[str]) -> bool:
    """Whether ``role`` is the lead node (:func:`lead_slot`) of a cluster with these job names
    (a cluster spec's keys): what a node can tell from its ``TF_CONFIG`` alone."""
    if role.job_name in CHIEF_JOBS:
        return True
    return role == Role(WORKER_JOB, 0) and not any(job in CHIEF_JOBS for job in jobs)
