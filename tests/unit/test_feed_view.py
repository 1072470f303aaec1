"""feed_view: which RDDs the feed jobs coalesce to one partition per task slot, and which data they leave."""

from tfos.feed.driver import feed_view


class FakeRDD:
    def __init__(self, partitions: int, pipelinable: bool | None = None):
        self.partitions = partitions
        if pipelinable is not None:  # only PipelinedRDDs have _is_pipelinable
            self._is_pipelinable = lambda: pipelinable

    def getNumPartitions(self):  # noqa: N802 (pyspark's name)
        return self.partitions

    def coalesce(self, n):
        return ("coalesced", n)


def test_a_cached_or_source_rdd_with_more_partitions_than_slots_is_coalesced():
    assert feed_view(FakeRDD(8), slots=2) == ("coalesced", 2)
    assert feed_view(FakeRDD(8, pipelinable=False), slots=2) == ("coalesced", 2)  # cached map chain


def test_an_uncached_map_chain_keeps_its_partitions_so_its_function_stays_pipelined():
    rdd = FakeRDD(8, pipelinable=True)
    assert feed_view(rdd, slots=2) is rdd


def test_data_with_no_more_partitions_than_slots_is_left_alone():
    rdd = FakeRDD(2)
    assert feed_view(rdd, slots=2) is rdd
