"""plan_feed: every record is allowed to exactly one node, and node loads differ by at most one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfos.feed.plan import FeedPlan, plan_feed

pytestmark = pytest.mark.timeout(60)


def check_plan(plan: FeedPlan, sizes: list[int], num_nodes: int) -> None:
    """The contract of plan_feed, checked without assuming how the plan was computed."""
    total = sum(sizes)
    assert plan.partition_sizes == tuple(sizes)
    assert plan.num_nodes == num_nodes
    assert plan.total == total
    assert sum(plan.expected) == total
    assert max(plan.expected) - min(plan.expected) <= 1
    # node i is allowed the size of the global range [i*T//n, (i+1)*T//n)
    assert plan.expected == tuple((i + 1) * total // num_nodes - i * total // num_nodes
                                  for i in range(num_nodes))

    assert plan.quota == min(plan.expected) == total // num_nodes
    assert plan.dropped_per_epoch == total - plan.quota * num_nodes
    assert 0 <= plan.dropped_per_epoch <= num_nodes - 1


@pytest.mark.parametrize(
    ("sizes", "num_nodes", "expected"),
    [
        pytest.param([4, 4], 2, (4, 4), id="one partition per node"),
        pytest.param([5, 0, 3], 2, (4, 4), id="an empty partition counts nothing"),
        pytest.param([10], 3, (3, 3, 4), id="one partition over every node"),
        pytest.param([1_000_000, 1, 1], 4, (250_000, 250_001, 250_000, 250_001),
                     id="one huge partition and two tiny ones"),
        pytest.param([0, 0, 0], 3, (0, 0, 0), id="all partitions empty"),
        pytest.param([], 2, (0, 0), id="no partitions"),
        pytest.param([2], 4, (0, 1, 0, 1), id="more nodes than records"),
        pytest.param([3, 0, 4], 1, (7,), id="one node"),
    ],
)
def test_plan_shares_records_evenly(sizes, num_nodes, expected):
    plan = plan_feed(sizes, num_nodes)
    assert plan.expected == expected
    check_plan(plan, sizes, num_nodes)


@pytest.mark.parametrize(
    ("sizes", "num_nodes", "quota", "dropped"),
    [
        ([9], 3, 3, 0),
        ([10], 3, 3, 1),
        ([11], 3, 3, 2),
        ([0], 3, 0, 0),
        ([], 1, 0, 0),
        ([2], 4, 0, 2),  # fewer records than nodes: nobody yields anything, every record is dropped
        ([5, 5], 1, 10, 0),
    ],
)
def test_quota_is_the_smallest_load_and_the_rest_is_dropped(sizes, num_nodes, quota, dropped):
    plan = plan_feed(sizes, num_nodes)
    assert plan.quota == quota
    assert plan.dropped_per_epoch == dropped


@pytest.mark.parametrize("num_nodes", [0, -1])
def test_plan_needs_at_least_one_node(num_nodes):
    with pytest.raises(ValueError) as error:
        plan_feed([3], num_nodes)
    assert str(error.value) == f"num_nodes must be >= 1; received: {num_nodes}"


def test_plan_is_a_frozen_value():
    plan = plan_feed([3, 4], 2)
    assert plan == plan_feed([3, 4], 2)
    with pytest.raises(AttributeError):
        plan.num_nodes = 3  # type: ignore[misc]


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.one_of(st.just(0), st.integers(0, 10), st.integers(0, 10**9)), max_size=30),
    num_nodes=st.integers(1, 200),
)
def test_plan_holds_for_skewed_and_huge_partitions(sizes, num_nodes):
    check_plan(plan_feed(sizes, num_nodes), sizes, num_nodes)
