"""Event ids as the write journal keeps them (:mod:`workers.sinks.journal`): compact, and checked without making
one string per event.

A batch's ids are journalled as *parts*: a string is one id; a list ``[prefix, start, count]`` stands for the ids
``prefix-start`` ... ``prefix-(start + count - 1)``, as :class:`core.event.IdRange` makes them for sources with no
ids of their own.  A sink batch of 10,000 such events is a few ranges, not 10,000 strings: recording, indexing and
checking it costs next to nothing (as strings, it cost the file_roll sink more than its write).

The same event may reach a journal once as part of a range and once as a string (a batch split after failures, or
cut down to the events not yet at rest), so every check compares ids, not their form: a string of the form
``<prefix>-<number>`` equals the range id it spells.
"""
from __future__ import annotations

from collections.abc import Iterable

from core.event import IdChain, IdRange


def compact(ids) -> list:
    """The journal parts of a batch's ids (None: no ids)."""
    if ids is None:
        return []
    if isinstance(ids, IdRange):
        return [[ids.prefix, ids.start, ids.count]] if ids.count else []
    if isinstance(ids, IdChain):
        return [p for part in ids.parts for p in compact(part)]
    return list(ids)


def expand(parts: Iterable) -> list[str]:
    """One string per id, in order."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        else:
            out.extend(IdRange(*part))          # spelled as the range spells its ids
    return out


def spelled_range_id(i: str) -> tuple[str, int] | None:
    """(prefix, number) if ``i`` is how a range spells one of its ids, else None."""
    prefix, dash, number = i.rpartition("-")
    if dash and number.isascii() and number.isdigit() and (number == "0" or number[0] != "0"):
        return prefix, int(number)
    return None


class IdIndex:
    """A set of ids given as parts: strings in a set, ranges as intervals per prefix."""

    def __init__(self, windows: Iterable[list] = ()):
        self.strings: set[str] = set()
        self.ranges: dict[str, list[tuple[int, int]]] = {}     # prefix -> [start, end) intervals
        self._spelled: dict[str, set[int]] | None = None       # the strings that spell range ids, parsed lazily
        for parts in windows:
            self.add(parts)

    def __len__(self) -> int:
        return len(self.strings) + sum(end - start for spans in self.ranges.values() for start, end in spans)

    def add(self, parts: list) -> None:
        strings = [p for p in parts if isinstance(p, str)]
        if strings:
            self.strings.update(strings)
            self._spelled = None
        for part in parts:
            if not isinstance(part, str):
                prefix, start, count = part
                self.ranges.setdefault(prefix, []).append((start, start + count))

    def has(self, i: str) -> bool:
        if i in self.strings:
            return True
        if self.ranges:
            spelled = spelled_range_id(i)
            if spelled is not None:
                prefix, n = spelled
                return any(start <= n < end for start, end in self.ranges.get(prefix, ()))
        return False

    def overlaps(self, prefix: str, start: int, end: int) -> bool:
        """Whether any id ``prefix-start`` ... ``prefix-(end - 1)`` is in the index."""
        if any(s < end and start < e for s, e in self.ranges.get(prefix, ())):
            return True
        if not self.strings:
            return False
        numbers = self._spelled_strings().get(prefix)
        return bool(numbers) and any(start <= n < end for n in numbers)

    def _spelled_strings(self) -> dict[str, set[int]]:
        if self._spelled is None:
            self._spelled = {}
            for i in self.strings:
                spelled = spelled_range_id(i)
                if spelled is not None:
                    self._spelled.setdefault(spelled[0], set()).add(spelled[1])
        return self._spelled

    def isdisjoint(self, parts: list) -> bool:
        """True if no id of ``parts`` is in the index and none is twice in ``parts``: the common case, decided
        with set operations and a few interval comparisons (False may also mean "could not tell quickly": the
        caller then checks id by id)."""
        strings = [p for p in parts if isinstance(p, str)]
        spans: dict[str, list[tuple[int, int]]] = {}
        for part in parts:
            if not isinstance(part, str):
                prefix, start, count = part
                spans.setdefault(prefix, []).append((start, start + count))
        if strings:
            if spans or len(set(strings)) != len(strings) or not self.strings.isdisjoint(strings):
                return False        # strings beside ranges in one batch: rare, and checked id by id
            if self.ranges and any(self.has(i) for i in strings):
                return False
        for prefix, intervals in spans.items():
            intervals.sort()
            if any(later[0] < earlier[1] for earlier, later in zip(intervals, intervals[1:])):
                return False
            if any(self.overlaps(prefix, start, end) for start, end in intervals):
                return False
        return True
