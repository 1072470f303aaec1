"""plan_feed: every record goes to exactly one node, contiguously, and node loads differ by at most one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfos.feed.plan import FeedPlan, Segment, plan_feed

pytestmark = pytest.mark.timeout(60)


def check_plan(plan: FeedPlan, sizes: list[int], num_nodes: int) -> None:
    """The contract of plan_feed, checked without assuming how the plan was computed."""
    total = sum(sizes)
    assert plan.partition_sizes == tuple(sizes)
    assert plan.num_nodes == num_nodes
    assert plan.total == total
    assert len(plan.segments) == len(sizes)

    # each partition: non-empty segments that tile [0, size) in order
    for size, segments in zip(sizes, plan.segments, strict=True):
        cursor = 0
        for segment in segments:
            assert segment.start == cursor
            assert segment.start < segment.end <= size
            assert 0 <= segment.node < num_nodes
            cursor = segment.end
        assert cursor == size

    # in global record order the node index never goes down: one contiguous range per node,
    # so a node's records are node-index-ordered slices of the data set
    nodes_in_order = [s.node for segments in plan.segments for s in segments]
    assert nodes_in_order == sorted(nodes_in_order)
    for segments in plan.segments:  # a partition visits a node once
        assert len({s.node for s in segments}) == len(segments)

    per_node = [0] * num_nodes
    for segments in plan.segments:
        for s in segments:
            per_node[s.node] += s.end - s.start
    assert tuple(per_node) == plan.expected
    assert sum(plan.expected) == total
    assert max(plan.expected) - min(plan.expected) <= 1
    # node i holds exactly the global range [i*T//n, (i+1)*T//n)
    assert plan.expected == tuple((i + 1) * total // num_nodes - i * total // num_nodes
                                  for i in range(num_nodes))

    assert plan.quota == min(plan.expected) == total // num_nodes
    assert plan.dropped_per_epoch == total - plan.quota * num_nodes
    assert 0 <= plan.dropped_per_epoch <= num_nodes - 1


def owners(plan: FeedPlan) -> list[int]:
    """The node of every record, in global order (for small plans)."""
    out = []
    for segments in plan.segments:
        for s in segments:
            out.extend([s.node] * (s.end - s.start))
    return out


@pytest.mark.parametrize(
    ("sizes", "num_nodes", "segments", "expected"),
    [
        pytest.param([4, 4], 2, ((Segment(0, 0, 4),), (Segment(1, 0, 4),)), (4, 4),
                     id="one partition per node"),
        pytest.param([5, 0, 3], 2, ((Segment(0, 0, 4), Segment(1, 4, 5)), (), (Segment(1, 0, 3),)),
                     (4, 4), id="empty partition feeds nobody; a partition spans two nodes"),
        pytest.param([10], 3, ((Segment(0, 0, 3), Segment(1, 3, 6), Segment(2, 6, 10)),), (3, 3, 4),
                     id="one partition split over every node"),
        pytest.param([1_000_000, 1, 1], 4,
                     ((Segment(0, 0, 250_000), Segment(1, 250_000, 500_001), Segment(2, 500_001, 750_001),
                       Segment(3, 750_001, 1_000_000)), (Segment(3, 0, 1),), (Segment(3, 0, 1),)),
                     (250_000, 250_001, 250_000, 250_001), id="one huge partition and two tiny ones"),
        pytest.param([0, 0, 0], 3, ((), (), ()), (0, 0, 0), id="all partitions empty"),
        pytest.param([], 2, (), (0, 0), id="no partitions"),
        pytest.param([2], 4, ((Segment(1, 0, 1), Segment(3, 1, 2)),), (0, 1, 0, 1),
                     id="more nodes than records"),
        pytest.param([1, 0, 2], 5, ((Segment(1, 0, 1),), (), (Segment(3, 0, 1), Segment(4, 1, 2))),
                     (0, 1, 0, 1, 1), id="more nodes than records over several partitions"),
        pytest.param([3, 0, 4], 1, ((Segment(0, 0, 3),), (), (Segment(0, 0, 4),)), (7,), id="one node"),
    ],
)
def test_plan_assigns_contiguous_even_segments(sizes, num_nodes, segments, expected):
    plan = plan_feed(sizes, num_nodes)
    assert plan.segments == segments
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


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), max_size=12), num_nodes=st.integers(1, 9))
def test_every_record_goes_to_exactly_one_node(sizes, num_nodes):
    plan = plan_feed(sizes, num_nodes)
    check_plan(plan, sizes, num_nodes)
    record_owners = owners(plan)
    total = sum(sizes)
    assert len(record_owners) == total
    assert record_owners == [next(i for i in range(num_nodes) if r < (i + 1) * total // num_nodes)
                             for r in range(total)]


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.one_of(st.just(0), st.integers(0, 10), st.integers(0, 10**9)), max_size=30),
    num_nodes=st.integers(1, 200),
)
def test_plan_holds_for_skewed_and_huge_partitions(sizes, num_nodes):
    check_plan(plan_feed(sizes, num_nodes), sizes, num_nodes)
