"""The write journal's compact ids (workers/sinks/journal_ids.py): ranges are journalled as ranges, and every check
gives the answer a set of id strings would give, whatever form (range or string) an id came in."""
from __future__ import annotations

import random

from core.event import Batch, IdChain, IdRange
from workers.sinks.journal import Journal, read_records
from workers.sinks.journal_ids import IdIndex, compact, expand, spelled_range_id


def test_ranges_stay_ranges_and_expand_to_the_batch_ids():
    ids = IdChain([IdRange("p", 0, 3), ["x-1", "plain"], IdRange("q", 7, 2)])
    parts = compact(ids)
    assert parts == [["p", 0, 3], "x-1", "plain", ["q", 7, 2]]
    assert expand(parts) == list(ids) == ["p-0", "p-1", "p-2", "x-1", "plain", "q-7", "q-8"]
    assert compact(None) == [] and compact(IdRange("p", 0, 0)) == []
    assert compact(Batch([b"a", b"b"], None, ["i1", "i2"]).ids) == ["i1", "i2"]


def test_only_the_spelling_of_a_range_id_is_taken_for_one():
    assert spelled_range_id("ab-cd-12") == ("ab-cd", 12)
    assert spelled_range_id("p-0") == ("p", 0)
    for other in ("p-012", "p-", "p", "p-1a", "p-１"):        # "１": a digit to isdigit(), not to a range
        assert spelled_range_id(other) is None


def test_an_id_at_rest_as_a_string_is_found_in_a_range_and_back():
    index = IdIndex([["p-5", "other"], [["q", 0, 10]]])
    assert not index.isdisjoint([["p", 0, 5], ["p", 5, 1]])      # p-5 came as a string before
    assert index.isdisjoint([["p", 0, 5], ["p", 6, 10]])
    assert not index.isdisjoint(["q-9"]) and index.isdisjoint(["q-10", "q-09"])
    assert index.has("q-3") and index.has("other") and not index.has("q-10")
    assert len(index) == 12


def test_an_id_twice_in_one_batch_is_caught_in_either_form():
    index = IdIndex()
    assert not index.isdisjoint([["p", 0, 5], ["p", 4, 2]])       # overlapping ranges of one prefix
    assert not index.isdisjoint([["p", 0, 5], "p-2"])
    assert not index.isdisjoint(["a", "a"])
    assert index.isdisjoint([["p", 0, 5], ["p", 5, 5], ["q", 0, 5]])


def naive_to_write(at_rest: set[str], ids: list[str]) -> list[int] | None:
    seen: set[str] = set()
    keep = [n for n, i in enumerate(ids) if not (i and (i in at_rest or i in seen)) and not seen.add(i)]
    return None if len(keep) == len(ids) else keep


def random_parts(rng: random.Random) -> list:
    parts = []
    for _ in range(rng.randint(1, 4)):
        prefix, start = rng.choice("pqr"), rng.randint(0, 40)
        if rng.random() < 0.7:
            parts.append([prefix, start, rng.randint(1, 6)])
        else:
            parts += [f"{prefix}-{start + k}" for k in range(rng.randint(1, 3))] + [rng.choice(["s", "t", ""])]
    return parts


def test_the_journal_skips_exactly_what_a_set_of_strings_would(tmp_path):
    rng = random.Random(7)
    journal = Journal(tmp_path / "j", keep=1000)
    journal.open()
    journal.opened("f", "f")
    at_rest: set[str] = set()
    skipped = 0
    for _ in range(400):
        parts = random_parts(rng)
        ids = expand(parts)
        expected = naive_to_write(at_rest, ids)
        got = journal.to_write(parts)
        assert (got if got is None or len(got) < len(ids) else None) == expected, (parts, sorted(at_rest))
        kept = ids if got is None else [ids[n] for n in got]
        skipped += len(ids) - len(kept)
        journal.writing("f", 0, 1, kept)
        journal.written(kept if rng.random() < 0.5 else compact_kept(parts, got))
        at_rest.update(i for i in kept if i)
    assert skipped > 100            # the scenario did exercise duplicates
    journal.close()


def compact_kept(parts: list, keep: list[int] | None) -> list:
    """The ids written, in the form the sink journals them: the parts as given if all were kept."""
    return parts if keep is None else [expand(parts)[n] for n in keep]


def test_a_batch_of_ranges_is_journalled_as_ranges(tmp_path):
    journal = Journal(tmp_path / "j")
    journal.open()
    journal.opened("f", "f")
    parts = compact(IdChain([IdRange("p" * 22, 0, 10000), IdRange("q" * 22, 0, 10000)]))
    journal.writing("f", 0, 100, parts)
    journal.written(parts)
    [_, record] = read_records(journal.path)
    assert record["ids"] == parts and journal.path.stat().st_size < 200     # not 20,000 strings
    assert journal.to_write(parts) == []
    journal.close()
