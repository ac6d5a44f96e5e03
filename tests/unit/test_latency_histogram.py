"""The sink batch latency histogram as stored (one non-cumulative field per bucket, the sum in microseconds) and
as read back for Prometheus (cumulative, ending with +Inf).  A MetricsStore with nothing flushed: no Redis."""
from __future__ import annotations

from core.counters import BATCH_SECONDS_BUCKETS, MetricsStore, histogram


def observed(seconds: list[float]) -> dict[str, str]:
    store = MetricsStore(redis_client=None, agent="a1")
    for s in seconds:
        store.group("SINK", "k1").observe_batch(s)
    return {k: str(v) for k, v in store._pending["SINK.k1"].items()}


def test_each_observation_lands_in_the_smallest_bucket_that_holds_it():
    values = observed([0.005, 0.0051, 0.3, 61.0])
    assert values == {"SinkBatchSeconds.le.0.005": "1", "SinkBatchSeconds.le.0.01": "1",
                      "SinkBatchSeconds.le.0.5": "1", "SinkBatchSeconds.le.+Inf": "1",
                      "SinkBatchSeconds.sum_us": str(5000 + 5100 + 300000 + 61000000)}


def test_read_back_cumulative_with_the_sum_in_seconds():
    buckets, total = histogram(observed([0.005, 0.0051, 0.3, 61.0]))
    assert [le for le, _ in buckets] == [str(b) for b in BATCH_SECONDS_BUCKETS] + ["+Inf"]
    cumulative = dict(buckets)
    assert (cumulative["0.005"], cumulative["0.01"], cumulative["0.25"], cumulative["0.5"]) == (1, 2, 2, 3)
    assert (cumulative["60.0"], cumulative["+Inf"]) == (3, 4)
    assert total == 61.3101


def test_a_sink_that_never_wrote_has_no_histogram():
    assert histogram({"EventDrainSuccessCount": "0"}) is None
