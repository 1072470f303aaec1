"""The node's feed server and its readers, driven by the real feeding side over 127.0.0.1.

Each test starts ``FeedServer``s on ``socket.create_server(("127.0.0.1", 0))``; feeding tasks
(``feed_partition``, ``infer_partition``) and the driver's ``ControlChannel`` run as they do in
Spark tasks, in threads; the test plays the TF process through ``DataFeed`` and
``epoch_chunks``. No Spark, no TensorFlow.
"""

from __future__ import annotations

import os
import pickle
import re
import socket
import time

import pytest

from tests import polling
from tests.unit.threads import Background
from tfos.errors import AuthenticationError, FeedConnectionError, FeedError, FeedTimeout
from tfos.feed import protocol
from tfos.feed.client import (
    ControlChannel,
    FeedTarget,
    PickledBatches,
    feed_partition,
    infer_partition,
)
from tfos.feed.node_feed import DataFeed, FeedServer, epoch_chunks
from tfos.feed.plan import plan_feed

pytestmark = pytest.mark.timeout(30)

SECRET = os.urandom(32)
#: every FeedServer here is a node of this run (bound into the feed handshake)
RUN_ID = "run-feed-test"
#: ~100 KB records for the back-pressure tests: a 4-byte index, then padding
BIG_RECORD_BYTES = 100_000




def wait_until(predicate, timeout_s: float = 5.0, what: str = "a condition") -> None:
    if not polling.wait_until(predicate, timeout_s, interval_s=0.01):
        raise AssertionError(f"waited {timeout_s} s for {what}")


@pytest.fixture
def make_server():
    """Factory of FeedServers; each is terminated, drained and closed after the test."""
    servers: list[FeedServer] = []
    controls: list[ControlChannel] = []

    def make(buffer_chunks: int = 4, epoch_records: int | None = None, node: str = "worker:0") -> FeedServer:
        """A server of node ``node``; with ``epoch_records``, the driver's plan of an epoch of that
        many is sent first (a node grants room only within an epoch's plan)."""
        server = FeedServer(socket.create_server(("127.0.0.1", 0)), SECRET, run_id=RUN_ID, node=node,
                            buffer_chunks=buffer_chunks)
        servers.append(server)
        if epoch_records is not None:
            controls.append(ControlChannel(target(server), SECRET, "input", feed_timeout=10))
            controls[-1].epoch({"epoch": 0, "quota": epoch_records, "expected": epoch_records, "columns": None})
        return server

    yield make
    for server in servers:
        DataFeed(server).terminate()  # releases connection threads blocked on a full queue
        server.close()
    for control in controls:
        control.close()


def target(server: FeedServer, executor_id: str = "0") -> FeedTarget:
    """How the driver names ``server``'s node (its name and run: the handshake checks both)."""
    return FeedTarget(server.node, "127.0.0.1", server.port, executor_id, server.run_id)


def meta(partition: int = 0, epoch: int = 0, qname: str = "input") -> dict:
    return {"qname": qname, "partition": partition, "epoch": epoch}


def big_records(count: int) -> list[bytes]:
    return [i.to_bytes(4, "big") + b"\0" * BIG_RECORD_BYTES for i in range(count)]


def iter_big_records(count: int):
    for i in range(count):
        yield i.to_bytes(4, "big") + b"\0" * BIG_RECORD_BYTES


def indices(records: list[bytes]) -> list[int]:
    return [int.from_bytes(r[:4], "big") for r in records]


def read_until_stop(feed: DataFeed, batch_size: int) -> list:
    out = []
    while not feed.should_stop():
        out.extend(feed.next_batch(batch_size))
    return out


def read_exactly(feed: DataFeed, count: int, batch_size: int) -> list:
    out: list = []
    while len(out) < count:
        out.extend(feed.next_batch(min(batch_size, count - len(out))))
    return out


# ------------------------------------------------------------------------------ training feed

def partition(records, stored_batch: int | None, chunk_records: int):
    """The records as a feeding task gets them: as they are, or as pyspark's pickled batches
    of ``stored_batch`` records (what a cached RDD holds), forwarded by PickledBatches."""
    if stored_batch is None:
        return records
    records = list(records)
    batches = [records[i:i + stored_batch] for i in range(0, len(records), stored_batch)]
    return PickledBatches([pickle.dumps(b) for b in batches], [len(b) for b in batches], chunk_records=chunk_records)


@pytest.mark.parametrize(
    ("sizes", "num_nodes", "chunk_records"),
    [
        ([23], 1, 4),
        ([5, 0, 23, 12], 1, 4),
        ([5, 0, 23, 12], 2, 4),
        ([40, 1, 0, 2], 3, 3),  # a huge partition spans all nodes, tiny ones feed the last
        ([2, 1], 5, 1),  # more nodes than records
        ([0, 0], 2, 4),  # nothing to feed at all
    ],
)
@pytest.mark.parametrize("stored_batch", [None, 3, 10], ids=["records", "pickled-batches-of-3", "pickled-batches-of-10"])
def test_every_record_reaches_one_node_exactly_once_and_each_node_gets_its_share(make_server, sizes, num_nodes, chunk_records, stored_batch):
    servers = [make_server(node=f"worker:{i}") for i in range(num_nodes)]
    targets = [target(s, str(i)) for i, s in enumerate(servers)]
    plan = plan_feed(sizes, num_nodes)
    controls = [ControlChannel(t, SECRET, "input", feed_timeout=10) for t in targets]
    for i, control in enumerate(controls):
        control.epoch({"epoch": 0, "quota": plan.quota, "expected": plan.expected[i], "columns": None})
    readers = [Background(read_until_stop, DataFeed(s, feed_timeout=10, node_name=f"worker:{i}"), 7)
               for i, s in enumerate(servers)]
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    feeders = [
        Background(feed_partition, partition(range(start, start + size), stored_batch, chunk_records),
                   size, targets, SECRET, meta(k), feed_timeout=10, chunk_records=chunk_records)
        for k, (start, size) in enumerate(zip(starts, sizes, strict=True))
    ]
    assert [f.result() for f in feeders] == sizes
    for control in controls:
        control.end()
        control.close()
    received = [r.result() for r in readers]

    assert sorted(r for records in received for r in records) == list(range(sum(sizes)))
    for i, records in enumerate(received):
        assert len(records) == plan.expected[i]  # the node's share, whichever partitions it came from
        # partitions feed concurrently, but each partition's records keep their order
        for start, size in zip(starts, sizes, strict=True):
            own = [r for r in records if start <= r < start + size]
            assert own == sorted(own)
    assert [s.stats["records"] for s in servers] == list(plan.expected)


def test_should_stop_turns_true_only_after_the_end_and_the_data_before_it(make_server, closing):
    server = make_server()
    control = ControlChannel(target(server), SECRET, "input", feed_timeout=10)
    feed = DataFeed(server, feed_timeout=10)
    closing(control)
    control.epoch({"epoch": 0, "quota": 10, "expected": 10, "columns": None})
    fed = feed_partition(range(10), 10, [target(server)], SECRET, meta(),
                        feed_timeout=10, chunk_records=3)
    assert fed == 10
    assert feed.next_batch(4) == [0, 1, 2, 3]
    assert feed.next_batch(4) == [4, 5, 6, 7]
    assert feed.next_batch(2) == [8, 9]
    assert not feed.should_stop()  # all data read, but the driver has not ended the feed
    control.end()
    assert not feed.should_stop()  # the end is only seen by reading up to it
    assert feed.next_batch(4) == []
    assert feed.should_stop()
    assert feed.next_batch(4) == []  # and stays ended without waiting
    assert feed.records == 10


def test_last_batch_before_the_end_is_short_and_ends_the_feed(make_server, closing):
    server = make_server()
    control = ControlChannel(target(server), SECRET, "input", feed_timeout=10)
    feed = DataFeed(server, feed_timeout=10)
    closing(control)
    control.epoch({"epoch": 0, "quota": 5, "expected": 5, "columns": None})
    feed_partition(range(5), 5, [target(server)], SECRET, meta(),
                  feed_timeout=10, chunk_records=2)
    control.end()
    assert feed.next_batch(4) == [0, 1, 2, 3]
    assert not feed.should_stop()
    assert feed.next_batch(4) == [4]
    assert feed.should_stop()


def test_next_batch_maps_dataframe_columns_to_tensor_names(make_server, closing):
    server = make_server()
    control = ControlChannel(target(server), SECRET, "input", feed_timeout=10)
    closing(control)
    control.epoch({"epoch": 0, "quota": 3, "expected": 3, "columns": ["label", "pixels"]})
    feed_partition([(0, "a"), (1, "b"), (2, "c")], 3, [target(server)], SECRET, meta(),
                  feed_timeout=10, chunk_records=2)
    feed = DataFeed(server, feed_timeout=10, input_mapping={"pixels": "x", "label": "y"})
    assert feed.next_batch(3) == {"x": ["a", "b", "c"], "y": [0, 1, 2]}

    control.epoch({"epoch": 1, "quota": 1, "expected": 1, "columns": ["label", "pixels"]})
    feed_partition([(3, "d")], 1, [target(server)], SECRET, meta(epoch=1), feed_timeout=10)
    wrong = DataFeed(server, feed_timeout=10, input_mapping={"image": "x"})
    with pytest.raises(FeedError) as error:
        wrong.next_batch(1)
    assert str(error.value) == "input_mapping names column 'image', but the DataFrame has ['label', 'pixels']"


# --------------------------------------------------------------------------------- epoch_chunks

@pytest.mark.parametrize(
    ("expected", "quota", "chunk_records", "chunks", "dropped"),
    [
        (7, 7, 3, [[0, 1, 2], [3, 4, 5], [6]], 0),
        (7, 6, 3, [[0, 1, 2], [3, 4, 5]], 1),
        (7, 5, 3, [[0, 1, 2], [3, 4]], 2),
        (7, 3, 3, [[0, 1, 2]], 4),
        (4, 3, 1, [[0], [1], [2]], 1),
        (1, 0, 3, [], 1),  # more nodes than records: this node yields nothing
        (0, 0, 3, [], 0),  # and one that is fed nothing does not wait for data
    ],
)
def test_epoch_chunks_yield_the_quota_and_count_the_rest_as_dropped(
        make_server, closing, expected, quota, chunk_records, chunks, dropped):
    server = make_server()
    control = ControlChannel(target(server), SECRET, "input", feed_timeout=10)
    closing(control)
    control.epoch({"epoch": 0, "quota": quota, "expected": expected, "columns": ["x"]})
    feeder = Background(feed_partition, range(expected), expected,
                        [target(server)], SECRET, meta(), feed_timeout=10, chunk_records=chunk_records)
    yielded = list(epoch_chunks(server, "input", feed_timeout=5, node_name="worker:0"))
    assert feeder.result() == expected
    assert yielded == [(chunk, ["x"]) for chunk in chunks]
    assert server.stats["dropped"] == dropped
    assert server.stats["records"] == expected


def test_epoch_chunks_run_one_epoch_per_call_until_the_feed_ends(make_server, closing):
    server = make_server(buffer_chunks=16)  # both epochs fit: fed before any is read
    control = ControlChannel(target(server), SECRET, "input", feed_timeout=10)
    closing(control)
    for epoch in range(2):
        control.epoch({"epoch": epoch, "quota": 4, "expected": 5, "columns": None})
        assert feed_partition(range(epoch * 100, epoch * 100 + 5), 5, [target(server)],
                             SECRET, meta(epoch=epoch), feed_timeout=10, chunk_records=2) == 5
    control.end()
    epochs = [[r for chunk, _ in epoch_chunks(server, "input", feed_timeout=5) for r in chunk]
              for _ in range(3)]
    assert epochs == [[0, 1, 2, 3], [100, 101, 102, 103], []]
    assert server.stats["dropped"] == 2


def test_epoch_chunks_refuse_a_feed_that_ends_inside_an_epoch(make_server, closing):
    server = make_server()
    control = ControlChannel(target(server), SECRET, "input", feed_timeout=10)
    closing(control)
    control.epoch({"epoch": 3, "quota": 7, "expected": 7, "columns": None})
    feed_partition(range(3), 3, [target(server)], SECRET, meta(), feed_timeout=10)
    control.end()
    with pytest.raises(FeedError) as error:
        list(epoch_chunks(server, "input", feed_timeout=5))
    assert str(error.value) == "the feed ended inside epoch 3 (3 of 7 records)"


def test_epoch_chunks_time_out_saying_what_arrived(make_server, closing):
    server = make_server()
    control = ControlChannel(target(server), SECRET, "input", feed_timeout=10)
    closing(control)
    control.epoch({"epoch": 0, "quota": 7, "expected": 7, "columns": None})
    feed_partition(range(3), 3, [target(server)], SECRET, meta(), feed_timeout=10)
    with pytest.raises(FeedTimeout) as error:
        list(epoch_chunks(server, "input", feed_timeout=0.3, node_name="worker:1"))
    assert str(error.value) == (
        "node worker:1 waited 0.3 s for data on queue 'input'; 3 records had arrived (1 chunks; buffer: "
        "0 of 4 chunks queued, 0 granted; 3 of 7 records of the epoch in); is cluster.train()/inference() "
        "running?"
    )


# ------------------------------------------------------------------------------- back-pressure

def test_back_pressure_holds_a_feeder_that_outruns_its_reader(make_server):
    server = make_server(buffer_chunks=2, epoch_records=200)
    records = big_records(200)  # 200 chunks of ~100 KB: 20 MB, far more than the pipe holds
    feeder = Background(feed_partition, records, 200, [target(server)], SECRET, meta(),
                        feed_timeout=20, chunk_records=1)
    wait_until(lambda: server.queue("input").queued >= 2, what="the queue to fill")
    time.sleep(1.0)  # the reader reads nothing for a second: the feeder must stay blocked

    assert feeder.alive()
    assert server.queue("input").queued == 2  # only granted room is filled
    assert server.stats["records"] == 2
    feed = DataFeed(server, feed_timeout=10)
    assert indices(read_exactly(feed, 200, batch_size=10)) == list(range(200))
    assert feeder.result() == 200
    assert server.stats["records"] == 200


def test_feeder_times_out_naming_the_node_and_what_it_had_taken(make_server):
    server = make_server(buffer_chunks=1, epoch_records=500, node="worker:3")
    started = time.monotonic()
    with pytest.raises(FeedTimeout) as error:
        # nobody reads: the one chunk slot fills, and no more room is granted
        feed_partition(iter_big_records(500), 500, [target(server, "7")], SECRET,
                      meta(), feed_timeout=1, chunk_records=1)
    assert time.monotonic() - started < 10
    assert str(error.value) == (
        "waited 1 s for room on any node to feed partition 0 (1 of its 500 records sent): worker:3 (executor 7) "
        "full, 1 records sent to it by this task; every node that still wants records is full and none took "
        "data meanwhile: is each main_fun reading its feed?")


@pytest.mark.parametrize(
    ("error", "raised", "message"),
    [
        (TimeoutError("timed out"), FeedTimeout,
         "waited 1 s for node worker:3 (executor 7) to read its feed (5 records of partition 0 sent to it); "
         "did the node hang?"),
        (BrokenPipeError(32, "Broken pipe"), FeedConnectionError,
         "feed to node worker:3 broke after 5 records of partition 0: [Errno 32] Broken pipe; did the node fail?"),
    ],
)
def test_feeder_stuck_on_its_close_frame_fails_like_on_a_chunk(make_server, monkeypatch, error, raised, message):
    # after the last chunk the socket's buffers may be full, so sending CLOSE can block as long as a chunk
    real_send = protocol.FeedChannel.send

    def send(channel, ftype, payload=b""):
        if ftype == protocol.CLOSE:
            raise error  # what sendall raises when the node stops reading / is gone
        return real_send(channel, ftype, payload)

    monkeypatch.setattr(protocol.FeedChannel, "send", send)
    server = make_server(epoch_records=5, node="worker:3")
    with pytest.raises(raised) as caught:
        feed_partition(range(5), 5, [target(server, "7")], SECRET, meta(),
                      feed_timeout=1, chunk_records=2)
    assert type(caught.value) is raised
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("fed", "read", "message"),
    [
        (0, 0, "node worker:2 waited 0.5 s for data on queue 'input'; 0 records had arrived (0 chunks; buffer: "
               "0 of 4 chunks queued, 0 granted; 0 of 0 records of the epoch in); is "
               "cluster.train()/inference() running?"),
        (3, 3, "node worker:2 waited 0.5 s for data on queue 'input'; 3 records had arrived (1 chunks; buffer: "
               "0 of 4 chunks queued, 0 granted; 3 of 3 records of the epoch in); is "
               "cluster.train()/inference() running?"),
    ],
)
def test_next_batch_times_out_without_data(make_server, fed, read, message):
    server = make_server(epoch_records=fed) if fed else make_server()
    if fed:
        feed_partition(range(fed), fed, [target(server)], SECRET, meta(), feed_timeout=10)
    feed = DataFeed(server, feed_timeout=0.5, node_name="worker:2")
    assert len(read_exactly(feed, read, batch_size=10)) == read
    started = time.monotonic()
    with pytest.raises(FeedTimeout) as error:
        feed.next_batch(10)
    assert 0.45 <= time.monotonic() - started < 3
    assert str(error.value) == message


# ------------------------------------------------------------------------------------ terminate

def test_terminate_releases_an_in_flight_feeder_and_refuses_new_feeds(make_server):
    server = make_server(buffer_chunks=1, epoch_records=200)
    feeder = Background(feed_partition, big_records(200), 200, [target(server)], SECRET,
                        meta(), feed_timeout=20, chunk_records=1)
    wait_until(lambda: server.queue("input").queued >= 1, what="the buffer's one slot to fill")
    feed = DataFeed(server, feed_timeout=10)

    feed.terminate()
    released = time.monotonic()
    # the running feed stops at once and reports the partition cut short: the driver ends the feed
    assert feeder.result(timeout_s=5) < 20
    assert time.monotonic() - released < 5
    assert server.stats["records"] < 20  # the rest was skipped, not sent
    assert feed.should_stop()
    assert feed.next_batch(10) == []

    started = time.monotonic()
    fed = feed_partition(range(50), 50, [target(server)], SECRET, meta(1),
                        feed_timeout=20, chunk_records=5)
    assert fed == 0  # fewer than planned: the driver sees the node stopped early
    assert time.monotonic() - started < 2


def test_terminate_on_one_node_cuts_short_a_partition_spanning_two(make_server):
    servers = [make_server(epoch_records=5, node=f"worker:{i}") for i in range(2)]
    targets = [target(s, str(i)) for i, s in enumerate(servers)]
    DataFeed(servers[1]).terminate()
    fed = feed_partition(range(10), 10, targets, SECRET, meta(),
                        feed_timeout=10, chunk_records=2)
    assert fed == 5
    assert read_exactly(DataFeed(servers[0], feed_timeout=5), 5, batch_size=5) == [0, 1, 2, 3, 4]


def test_terminate_releases_every_feeder_blocked_on_the_queue(make_server):
    server = make_server(buffer_chunks=1, epoch_records=300)
    feeders = [Background(feed_partition, big_records(100), 100, [target(server)], SECRET,
                          meta(k), feed_timeout=20, chunk_records=1) for k in range(3)]
    # the one chunk slot is filled; the three feeders wait for room
    wait_until(lambda: server.stats["chunks"] >= 1, what="the slot to fill")
    time.sleep(0.3)
    DataFeed(server).terminate()
    fed = [f.result(timeout_s=5) for f in feeders]
    assert sum(fed) == 1  # cut short: one record went in, the rest was skipped


# ------------------------------------------------------------------------------------ inference

def serve_inference(feed: DataFeed, batch_size: int, split_results: bool = False) -> list[int]:
    """A TFoS-style inference loop (result = record * 10); returns the batch sizes it saw."""
    sizes = []
    while not feed.should_stop():
        batch = feed.next_batch(batch_size)
        if not batch:
            continue
        sizes.append(len(batch))
        results = [r * 10 for r in batch]
        if split_results:  # one batch answered in two calls
            feed.batch_results(results[:1])
            feed.batch_results(results[1:])
        else:
            feed.batch_results(results)
    return sizes


@pytest.mark.parametrize(
    ("partitions", "batch_size", "chunk_records", "split_results", "batches"),
    [
        ([0], 3, 4, False, []),
        ([1], 3, 4, False, [1]),
        ([7], 3, 4, False, [3, 3, 1]),  # not a multiple of the batch size: a short last batch
        ([12], 3, 4, False, [3, 3, 3, 3]),
        ([0, 7, 0, 12], 3, 4, False, [3, 3, 1, 3, 3, 3, 3]),  # a batch never spans two partitions
        ([100], 8, 7, True, [8] * 12 + [4]),
    ],
)
def test_inference_returns_one_result_per_record_in_order(
        make_server, partitions, batch_size, chunk_records, split_results, batches):
    server = make_server()
    consumer = Background(serve_inference, DataFeed(server, train_mode=False, feed_timeout=10), batch_size,
                          split_results)
    for k, size in enumerate(partitions):
        records = range(1000 * k, 1000 * k + size)
        results = list(infer_partition(records, target(server), SECRET, {"qname": "input", "partition": k},
                                       feed_timeout=10, chunk_records=chunk_records))
        assert results == [r * 10 for r in records]
    control = ControlChannel(target(server), SECRET, "input", feed_timeout=10)
    control.end()
    control.close()
    assert consumer.result() == batches


def test_concurrent_inference_connections_each_get_their_own_results(make_server):
    server = make_server(buffer_chunks=2)
    consumer = Background(serve_inference, DataFeed(server, train_mode=False, feed_timeout=10), 4)
    jobs = {
        k: Background(lambda k=k, chunk=chunk: list(infer_partition(
            range(1000 * k, 1000 * k + 60), target(server), SECRET, {"qname": "input", "partition": k},
            feed_timeout=10, chunk_records=chunk)))
        for k, chunk in [(0, 3), (1, 5), (2, 1)]
    }
    for k, job in jobs.items():
        assert job.result() == [r * 10 for r in range(1000 * k, 1000 * k + 60)]
    control = ControlChannel(target(server), SECRET, "input", feed_timeout=10)
    control.end()
    control.close()
    assert sum(consumer.result()) == 180


def test_batch_results_refuses_more_results_than_records_taken(make_server):
    server = make_server()
    feed = DataFeed(server, train_mode=False, feed_timeout=10)
    with pytest.raises(FeedError) as error:
        feed.batch_results([1, 2])
    assert str(error.value) == "batch_results got 2 more results than records fed"

    job = Background(lambda: list(infer_partition(range(3), target(server), SECRET,
                                                  {"qname": "input", "partition": 0}, feed_timeout=10)))
    assert feed.next_batch(5) == [0, 1, 2]
    with pytest.raises(FeedError) as error:
        feed.batch_results([0, 10, 20, 30])
    assert str(error.value) == "batch_results got 1 more results than records fed"
    assert job.result() == [0, 10, 20]  # the three that had records went back


# ------------------------------------------------------------------------ connection failures

def test_a_closed_node_is_skipped_at_once(make_server):
    server = make_server()
    port = server.port
    server.close()  # as when the node's TF process ended: connections are refused
    started = time.monotonic()
    fed = feed_partition(range(3), 3, [FeedTarget("worker:4", "127.0.0.1", port, "9", RUN_ID)], SECRET,
                        meta(), feed_timeout=5)
    assert fed == 0  # fewer than planned: the driver sees the node stopped taking data
    assert time.monotonic() - started < 2
    assert server.stats == {}


def test_feeding_an_unreachable_node_names_it():
    with pytest.raises(FeedError) as error:
        feed_partition(range(3), 3, [FeedTarget("worker:4", "no-such-host.invalid", 1, "9", RUN_ID)],
                      SECRET, meta(), feed_timeout=5)
    # the middle is the resolver's own words, which vary by platform
    assert re.fullmatch(r"cannot reach the feed of node worker:4 at no-such-host\.invalid:1 \(executor 9\): "
                        r"\[Errno -?\d+\] .+; did the node fail\?", str(error.value)), str(error.value)


def test_feeding_with_another_runs_secret_is_refused(make_server):
    server = make_server()
    with pytest.raises(AuthenticationError) as error:
        feed_partition(range(3), 3, [target(server)], os.urandom(32), meta(), feed_timeout=5)
    assert str(error.value) == (f"feed endpoint 127.0.0.1:{server.port} could not prove this run's secret for "
                                f"node worker:0 of run {RUN_ID} (another node or another run answered there); "
                                "refusing to send it data")
    assert server.stats == {}


@pytest.mark.timeout(30)
def test_inference_without_batch_results_fails_the_task_at_feed_timeout_not_never(make_server):
    server = make_server()
    feed = DataFeed(server, train_mode=False, feed_timeout=10)

    def take_but_never_answer():
        taken = []
        while len(taken) < 5:
            taken += feed.next_batch(5)
        return len(taken)

    consumer = Background(take_but_never_answer)
    start = time.monotonic()
    job = Background(lambda: list(infer_partition(range(5), target(server), SECRET,
                                                  {"qname": "input", "partition": 7}, feed_timeout=1.0)))
    with pytest.raises(FeedError) as err:
        job.result()
    assert time.monotonic() - start < 12
    assert str(err.value) == (
        "node worker:0: node answered 0 of 5 records of partition 7 within 1 s; "
        "main_fun must call batch_results() once per batch"
    )
    assert consumer.result() == 5


def test_arrow_chunks_travel_sealed_and_come_back_as_the_same_rows(make_server):
    import pyarrow as pa

    from tfos.feed.client import ArrowChunks

    server = make_server()
    consumer = Background(serve_inference, DataFeed(server, train_mode=False, feed_timeout=10), 7)
    batch = pa.RecordBatch.from_pydict({"x": list(range(20)), "blob": [bytes([i]) * 3 for i in range(20)]})
    results = list(infer_partition(ArrowChunks([batch], chunk_records=6), target(server), SECRET,
                                   {"qname": "input", "partition": 0}, feed_timeout=10))
    # serve_inference multiplies each record by 10: a row tuple times 10 repeats it
    assert results == [(i, bytes([i]) * 3) * 10 for i in range(20)]
    control = ControlChannel(target(server), SECRET, "input", feed_timeout=10)
    control.end()
    control.close()
    consumer.result()


def test_a_record_that_cannot_be_sent_fails_the_inference_task_at_once_not_at_feed_timeout(make_server):
    server = make_server()
    Background(serve_inference, DataFeed(server, train_mode=False, feed_timeout=10), 5)
    records = [1, 2, lambda: "pickle refuses a lambda", 4]
    start = time.monotonic()
    with pytest.raises(FeedError) as err:
        list(infer_partition(records, target(server), SECRET, {"qname": "input", "partition": 3},
                             feed_timeout=60, chunk_records=2))
    assert time.monotonic() - start < 5
    assert str(err.value).startswith("feeding partition 3 to node worker:0 failed after 2 records: ")


def test_pickled_batches_that_do_not_match_the_count_fail_the_partition_clearly(make_server):
    server = make_server()
    control = ControlChannel(target(server), SECRET, "input", feed_timeout=10)
    control.epoch({"epoch": 0, "quota": 6, "expected": 6, "columns": None})
    reader = Background(read_until_stop, DataFeed(server, feed_timeout=10), 4)
    # the count saw batches of 3 and 3; the data now holds 3 and 4 (it changed between jobs)
    blobs = [pickle.dumps([0, 1, 2]), pickle.dumps([3, 4, 5, 6])]
    with pytest.raises(FeedError) as error:
        feed_partition(PickledBatches(blobs, [3, 3]), 6, [target(server)], SECRET, meta(5),
                      feed_timeout=10)
    assert str(error.value) == ("node worker:0 received 7 records of partition 5 where 6 were sent; "
                                "the data is not deterministic: cache() it")
    control.end()
    control.close()
    reader.result()


def test_a_partition_with_fewer_batches_than_counted_is_refused_by_name():
    chunks = PickledBatches([pickle.dumps([1, 2])], [2, 2])
    with pytest.raises(FeedError, match=r"partition ended after 1 of the 2 batches the count job saw"):
        chunks.take(10)
