"""How many records of a data set each training node takes per epoch, before it is fed.

The driver counts each partition's records; node ``i`` is allowed ``(i+1)*T//n - i*T//n``
of the ``T`` records, so loads differ by at most one record whatever the skew. *Which*
records a node gets is not planned: feeding tasks deal chunks to whichever node granted
room (``buffer.py``), so no node waits for a partition that another node's full buffer
holds up. Each node yields ``quota = T//n`` records per epoch to ``ctx.dataset``, which
makes every synchronous worker run the same number of steps; the at most ``n-1``
records above the quota are dropped and reported.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeedPlan:
    partition_sizes: tuple[int, ...]
    num_nodes: int
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
    """Share the records out evenly: loads differ by at most one."""
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1; received: {num_nodes}")
    total = sum(partition_sizes)
    bounds = [i * total // num_nodes for i in range(num_nodes + 1)]
    expected = tuple(bounds[i + 1] - bounds[i] for i in range(num_nodes))
    return FeedPlan(tuple(partition_sizes), num_nodes, expected)
