"""Fault injection into flows that end in keyed stores, short versions (`make chaos` runs the long ones): the
stand-in servers of tests/stores.py behind a real agent, its sink worker killed or its store made unavailable.

Keyed writes make redeliveries overwrites, so beyond losing nothing these must store nothing twice.
"""
from __future__ import annotations

import chaos
import pytest

pytestmark = pytest.mark.chaos
SHORT = chaos.store_scenarios(long=False)


@pytest.mark.parametrize("name", list(SHORT))
def test_nothing_acknowledged_is_lost_and_nothing_is_stored_twice(name, tmp_path):
    result = SHORT[name](tmp_path)
    print(result.row())
    assert result.sent > 0
    assert result.lost == 0, result.row()
    assert result.delivered == result.sent
    assert result.duplicated == 0, result.row()
