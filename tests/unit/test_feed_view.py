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


class FakeDataFrame:
    schema = "a long"

    def __init__(self, partitions: int):
        self.rdd = FakeRDD(partitions)

    def mapInArrow(self, *_):  # noqa: N802
        raise AssertionError("not called")

    def coalesce(self, n):
        return ("coalesced frame", n)


def test_a_cached_or_source_rdd_with_more_partitions_than_slots_is_coalesced():
    assert feed_view(FakeRDD(8), slots=2) == ("coalesced", 2)
    assert feed_view(FakeRDD(8, pipelinable=False), slots=2) == ("coalesced", 2)  # cached map chain


def test_an_uncached_map_chain_keeps_its_partitions_so_its_function_stays_pipelined():
    rdd = FakeRDD(8, pipelinable=True)
    assert feed_view(rdd, slots=2) is rdd


def test_data_with_no_more_partitions_than_slots_is_left_alone():
    rdd = FakeRDD(2)
    assert feed_view(rdd, slots=2) is rdd


def test_a_dataframe_is_never_coalesced_since_each_query_would_group_its_partitions_afresh():
    frame = FakeDataFrame(9)
    assert feed_view(frame, slots=4) is frame


def test_tagged_arrow_batches_split_into_runs_of_one_partition_without_the_tag():
    import pyarrow as pa

    from tfos.feed.driver import PARTITION_COLUMN, _by_partition

    def batch(ids, tags):
        return pa.RecordBatch.from_pydict({"id": ids, PARTITION_COLUMN: pa.array(tags, pa.int32())})

    batches = [batch([1, 2, 3], [4, 4, 0]), batch([], []), batch([5, 6], [0, 2]), batch([7], [2])]
    runs = [(p, piece.to_pydict()) for p, piece in _by_partition(batches)]
    assert runs == [(4, {"id": [1, 2]}), (0, {"id": [3]}), (0, {"id": [5]}), (2, {"id": [6]}), (2, {"id": [7]})]
