"""The fault-injection suite, short versions (`make chaos` runs the long ones: python tests/chaos/chaos.py --long).

Every scenario must lose no acknowledged event.  Duplicates are allowed where delivery is at least once and the
source cannot tell (a client that sends a request again after an error gets new ids) and are reported; a sink worker
killed between its write and its acknowledgement must leave no duplicate at rest (the file_roll and hdfs journals).
"""
from __future__ import annotations

import chaos
import pytest

pytestmark = pytest.mark.chaos
SHORT = chaos.scenarios(long=False)
# kill -9 of a file_roll sink worker: what it wrote before the kill is not written again when its batch comes back.
FILE_ROLL_WORKER_KILLS = ("worker", "worker-after-write", "replicated-worker", "pool-child", "held-batch",
                          "held-batch-long-lease")


@pytest.mark.parametrize("name", list(SHORT))
def test_no_acknowledged_event_is_lost(name, tmp_path):
    result = SHORT[name](tmp_path)
    print(result.row())
    assert result.sent > 0
    assert result.lost == 0, result.row()
    assert result.unrecovered == 0, result.row()
    assert result.delivered == result.sent
    if name in FILE_ROLL_WORKER_KILLS:
        assert result.duplicated == 0, f"duplicates at rest: {result.row()}"
    if name.startswith("hdfs-"):
        assert result.duplicated == 0, f"duplicates at rest: {result.row()}"
        assert result.tmp_left == 0, f"in-use files left after the next start: {result.row()}"
    if name == "replicated-worker":
        assert "left in Redis" not in " ".join(result.notes), result.row()
    if name == "reload":
        # A replaced source finishes its in-flight requests, a replaced worker its batch: nothing is doubled.
        assert result.duplicated == 0, result.row()
        assert result.faults >= 2 and "reloads applied" in " ".join(result.notes)
    if name == "full":
        assert "503" in " ".join(result.notes)
        assert result.peak_growth_kib < 32 * 1024, "the agent's memory grew while the channel was full"
