"""Splitting a data set's records evenly over the training nodes, before it is fed.

The driver counts each partition's records, then gives node ``i`` the contiguous
global range ``[i*T//n, (i+1)*T//n)``. A partition may span several nodes (a huge
partition is split, an empty one feeds nobody), so node loads differ by at most one
record whatever the skew. Each node yields ``quota = T//n`` records per epoch to
``ctx.dataset``, which makes every synchronous worker run the same number of steps;
the at most ``n-1`` records above the quota are dropped and reported.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    node: int  # index into the consumer list
    start: int  # record offsets within the partition
    end: int


@dataclass(frozen=True)
class FeedPlan:
    partition_sizes: tuple[int, ...]
    num_nodes: int
    segments: tuple[tuple[Segment, ...], ...]  # per partition
    expected: tuple[int, ...]  # records each node receives per epoch

    @property
    def total(self) -> int:
        return sum(self.partition_sizes)

    @property
    def quota(self) -> int:
        """Records every node yields per epoch to ``ctx.dataset``."""
        return min(self.expected) if self.expected else 0

    @property
    def dropped_per_epoch(self) -> int:
        return self.total - self.quota * self.num_nodes


def plan_feed(partition_sizes: list[int], num_nodes: int) -> FeedPlan:
    """Assign every record to exactly one node, contiguously and evenly."""
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1; received: {num_nodes}")
    total = sum(partition_sizes)
    bounds = [i * total // num_nodes for i in range(num_nodes + 1)]
    segments = []
    offset = 0
    node = 0
    for size in partition_sizes:
        parts = []
        start = 0
        while start < size:
            while bounds[node + 1] <= offset + start:
                node += 1
            end = min(size, bounds[node + 1] - offset)
            parts.append(Segment(node, start, end))
            start = end
        segments.append(tuple(parts))
        offset += size
    expected = tuple(bounds[i + 1] - bounds[i] for i in range(num_nodes))
    return FeedPlan(tuple(partition_sizes), num_nodes, tuple(segments), expected)
