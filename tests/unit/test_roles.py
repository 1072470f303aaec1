"""Role planning: deterministic slot -> role, cluster spec, TF_CONFIG and training rank."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfos.errors import ConfigError
from tfos.roles import Role, cluster_spec, plan_roles, tf_config, training_rank

pytestmark = pytest.mark.timeout(60)


def names(roles: list[Role]) -> list[str]:
    return [str(r) for r in roles]


PLANS = [
    # (num_executors, num_ps, master_node, eval_node, expected roles by slot)
    (1, 0, "chief", False, ["chief:0"]),
    (3, 0, "chief", False, ["chief:0", "worker:0", "worker:1"]),
    (4, 2, "chief", False, ["ps:0", "ps:1", "chief:0", "worker:0"]),
    (3, 1, "chief", True, ["ps:0", "chief:0", "evaluator:0"]),
    (5, 1, "chief", True, ["ps:0", "chief:0", "evaluator:0", "worker:0", "worker:1"]),
    (3, 1, "master", False, ["ps:0", "master:0", "worker:0"]),
    (2, 0, None, False, ["worker:0", "worker:1"]),
    (3, 1, None, True, ["ps:0", "evaluator:0", "worker:0"]),
    (2, 0, "chief", True, ["chief:0", "evaluator:0"]),
]


@pytest.mark.parametrize(("n", "ps", "master", "evaluator", "expected"), PLANS)
def test_roles_go_ps_then_chief_then_evaluator_then_workers(n, ps, master, evaluator, expected):
    assert names(plan_roles(n, ps, master, evaluator)) == expected


def test_plan_is_the_same_every_time():
    assert plan_roles(6, 2, "chief", True) == plan_roles(6, 2, "chief", True)


TOO_SMALL = [
    (2, 2, "chief", False, "use num_executors >= 3"),
    (1, 0, None, True, "use num_executors >= 2"),
    (0, 0, None, False, "use num_executors >= 1"),
    (2, 1, "chief", True, "use num_executors >= 3"),
]


@pytest.mark.parametrize(("n", "ps", "master", "evaluator", "fix"), TOO_SMALL)
def test_plan_without_a_trainer_is_refused_with_the_minimum(n, ps, master, evaluator, fix):
    message = (
        f"num_executors={n} is too small for num_ps={ps}, master_node={master!r}, "
        f"eval_node={evaluator}: it leaves no node to train; {fix}"
    )
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        plan_roles(n, ps, master, evaluator)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 40), ps=st.integers(0, 5), master=st.sampled_from(["chief", "master", None]),
    evaluator=st.booleans(),
)
def test_every_valid_plan_has_one_unique_role_per_slot(n, ps, master, evaluator):
    try:
        roles = plan_roles(n, ps, master, evaluator)
    except ConfigError:
        reserved = ps + (1 if master else 0) + (1 if evaluator else 0)
        assert n < reserved + (0 if master else 1)
        return
    assert len(roles) == n
    assert len({(r.job_name, r.task_index) for r in roles}) == n
    jobs = [r.job_name for r in roles]
    order = {"ps": 0, "chief": 1, "master": 1, "evaluator": 2, "worker": 3}
    assert jobs == sorted(jobs, key=order.__getitem__)
    assert jobs.count("ps") == ps
    for job in set(jobs):
        assert [r.task_index for r in roles if r.job_name == job] == list(range(jobs.count(job)))


def addresses_for(roles: list[Role]) -> list[str]:
    return [f"host-{slot}:{2000 + slot}" for slot in range(len(roles))]


def test_cluster_spec_lists_each_job_in_task_order_without_the_evaluator():
    roles = plan_roles(6, 2, "chief", True)  # ps:0 ps:1 chief:0 evaluator:0 worker:0 worker:1
    spec = cluster_spec(roles, addresses_for(roles))
    assert spec == {
        "ps": ["host-0:2000", "host-1:2001"],
        "chief": ["host-2:2002"],
        "worker": ["host-4:2004", "host-5:2005"],
    }


@pytest.mark.parametrize(("n", "ps", "master", "evaluator", "expected"), PLANS)
def test_cluster_spec_has_unique_tasks_and_addresses(n, ps, master, evaluator, expected):
    roles = plan_roles(n, ps, master, evaluator)
    spec = cluster_spec(roles, addresses_for(roles))
    assert "evaluator" not in spec
    all_addresses = [a for addrs in spec.values() for a in addrs]
    assert len(all_addresses) == len(set(all_addresses)) == sum(r.job_name != "evaluator" for r in roles)
    for role, address in zip(roles, addresses_for(roles), strict=True):
        if role.job_name != "evaluator":
            assert spec[role.job_name][role.task_index] == address


def test_tf_config_names_the_cluster_and_this_task():
    roles = plan_roles(4, 1, "chief", True)
    spec = cluster_spec(roles, addresses_for(roles))
    config = tf_config(spec, Role("evaluator", 0))
    assert config == {"cluster": spec, "task": {"type": "evaluator", "index": 0}}
    assert json.loads(json.dumps(config)) == config  # exported as the TF_CONFIG env var
    assert tf_config(spec, roles[3]) == {"cluster": spec, "task": {"type": "worker", "index": 0}}


RANKS = [
    # roles plan -> [(slot's expected worker_num)], num_workers
    ((5, 1, "chief", True), [-1, 0, -1, 1, 2], 3),
    ((3, 0, "chief", False), [0, 1, 2], 3),
    ((3, 1, "master", False), [-1, 0, 1], 2),
    ((3, 1, None, False), [-1, 0, 1], 2),
    ((2, 0, None, False), [0, 1], 2),
    ((2, 0, "chief", True), [0, -1], 1),
    ((4, 2, "chief", False), [-1, -1, 0, 1], 2),
]


@pytest.mark.parametrize(("plan", "worker_nums", "num_workers"), RANKS)
def test_training_rank_puts_the_chief_first_and_skips_ps_and_evaluator(plan, worker_nums, num_workers):
    roles = plan_roles(*plan)
    assert [training_rank(roles, r) for r in roles] == [(w, num_workers) for w in worker_nums]


def test_role_prints_as_job_and_index():
    assert str(Role("worker", 3)) == "worker:3"
    assert Role("ps", 0) == Role("ps", 0)
    assert hash(Role("ps", 0)) == hash(Role("ps", 0))
