"""FeedReport reads as one line a driver can log."""

from tfos.feed.driver import FeedReport


def test_feed_report_says_what_was_fed_and_dropped():
    report = FeedReport(qname="input", num_epochs=3, records_per_epoch=1437, nodes=["chief:0", "worker:0"],
                        records_per_node=[718, 719], quota_per_node=718, dropped_per_epoch=1, epochs_fed=3)
    assert str(report) == (
        "fed 3 of 3 epoch(s) of 1437 records on queue 'input' (chief:0 718, worker:0 719); "
        "ctx.dataset yields 718 per node per epoch, dropping 1"
    )
    report.terminated = True
    assert str(report).endswith("dropping 1 (stopped early by a node)")
