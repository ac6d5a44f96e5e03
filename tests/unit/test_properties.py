"""app/properties.py: Java ``.properties`` parsing as ``java.util.Properties.load`` does it, and ``${env:...}``."""
from __future__ import annotations

import pytest

from core.properties import Line, parse, substitute


def pairs(text: str) -> list[tuple[str, str]]:
    return [(line.key, line.value) for line in parse(text)]


def as_dict(text: str) -> dict[str, str]:
    """What a caller gets when it takes the last of repeated keys (as Properties.load does)."""
    return {line.key: line.value for line in parse(text)}


# --- comments and blank lines ----------------------------------------------------------------------------------

def test_hash_and_bang_comments_are_skipped():
    text = "# a comment\n! another comment\na = 1\n   # indented comment\n\t! indented bang\nb = 2\n"
    assert pairs(text) == [("a", "1"), ("b", "2")]


def test_blank_and_whitespace_only_lines_are_skipped():
    assert pairs("\n\n   \n\t\na = 1\n\n") == [("a", "1")]


def test_empty_text_gives_no_lines():
    assert parse("") == []
    assert parse("# only a comment\n") == []


def test_hash_inside_a_value_is_not_a_comment():
    assert pairs("a = x # not a comment") == [("a", "x # not a comment")]


def test_comment_line_ending_in_backslash_does_not_continue():
    # Java: a comment line never continues onto the next line.
    assert pairs("# comment \\\na = 1") == [("a", "1")]


# --- separators ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "a1.sources = r1",
    "a1.sources=r1",
    "a1.sources: r1",
    "a1.sources:r1",
    "a1.sources r1",
    "a1.sources\tr1",
    "a1.sources   =   r1",
    "   a1.sources = r1",
    "a1.sources \t : \t r1",
])
def test_separator_forms(line):
    assert pairs(line) == [("a1.sources", "r1")]


def test_value_keeps_inner_spaces_and_later_separators():
    assert pairs("a1.sources = r1 r2  r3") == [("a1.sources", "r1 r2  r3")]
    assert pairs("key = = value") == [("key", "= value")]
    assert pairs("key:value=x") == [("key", "value=x")]
    assert pairs("key value = x") == [("key", "value = x")]
    assert pairs("url = http://host:8080/path") == [("url", "http://host:8080/path")]


def test_key_without_value():
    assert pairs("lonely") == [("lonely", "")]
    assert pairs("lonely =") == [("lonely", "")]
    assert pairs("lonely:   ") == [("lonely", "")]


def test_escaped_separators_belong_to_the_key():
    assert pairs(r"a\=b = c") == [("a=b", "c")]
    assert pairs(r"a\:b = c") == [("a:b", "c")]
    assert pairs(r"a\ b = c") == [("a b", "c")]


# --- continuation ----------------------------------------------------------------------------------------------

def test_backslash_continuation_strips_leading_whitespace_of_next_line():
    text = "a1.sources = r1 \\\n      r2 \\\n\tr3\nb = 2"
    assert pairs(text) == [("a1.sources", "r1 r2 r3"), ("b", "2")]


def test_continuation_line_number_is_the_first_physical_line():
    lines = parse("# c\na = 1 \\\n  2\nb = 3")
    assert lines == [Line(2, "a", "1 2"), Line(4, "b", "3")]


def test_continued_line_starting_with_hash_is_not_a_comment():
    assert pairs("a = x \\\n  # y") == [("a", "x # y")]


def test_even_number_of_backslashes_does_not_continue():
    # "\\\\" is an escaped backslash: the value ends with one backslash and the next line is its own property.
    assert pairs("a = x\\\\\nb = y") == [("a", "x\\"), ("b", "y")]


def test_odd_number_of_backslashes_continues():
    assert pairs("a = x\\\\\\\n  y") == [("a", "x\\y")]


def test_backslash_at_end_of_file_is_dropped():
    assert pairs("a = x\\") == [("a", "x")]


def test_continuation_onto_blank_line_ends_the_value():
    assert pairs("a = b\\\n\nc = d") == [("a", "b"), ("c", "d")]
    assert pairs("a = b\\\n   \nc = d") == [("a", "b"), ("c", "d")]


def test_crlf_line_endings():
    assert pairs("a = 1\r\nb = 2 \\\r\n   3\r\n") == [("a", "1"), ("b", "2 3")]


@pytest.mark.parametrize("char", ["\x0c", "\x85", "\u2028", "\x1c"], ids=["formfeed", "NEL", "LS", "FS"])
def test_only_cr_and_lf_end_a_line(char):
    # java.util.Properties ends lines only at \n and \r; a form feed, U+0085, U+2028 ... inside a value is kept.
    assert pairs(f"a = x{char}y\nb = 2") == [("a", f"x{char}y"), ("b", "2")]


# --- escapes ---------------------------------------------------------------------------------------------------

def test_unicode_escapes():
    assert pairs(r"greeting = caf\u00e9 \u00C9t\u00e9") == [("greeting", "café Été")]
    assert pairs(r"a1.sources.r\u0031.type = netcat") == [("a1.sources.r1.type", "netcat")]


def test_tab_newline_and_other_escapes():
    assert pairs(r"sep = a\tb") == [("sep", "a\tb")]
    assert pairs(r"nl = a\nb\rc\fd") == [("nl", "a\nb\rc\fd")]


def test_escaped_backslash_and_unknown_escape():
    assert pairs(r"path = C:\\flume\\conf") == [("path", "C:\\flume\\conf")]
    # Java drops the backslash of an unknown escape: \q -> q, \# -> #
    assert pairs(r"a = \q\#x") == [("a", "q#x")]


def test_escaped_leading_space_is_kept():
    assert pairs("a = \\  x") == [("a", "  x")]


# --- duplicates and trailing white space -----------------------------------------------------------------------

def test_duplicates_are_kept_in_order_and_last_wins():
    text = "a = 1\nb = 2\na = 3\n"
    assert parse(text) == [Line(1, "a", "1"), Line(2, "b", "2"), Line(3, "a", "3")]
    assert as_dict(text) == {"a": "3", "b": "2"}


def test_trailing_whitespace_of_value_is_dropped():
    assert pairs("a = /var/log/flume   \nb = 5\t \n") == [("a", "/var/log/flume"), ("b", "5")]


def test_line_numbers():
    text = "# header\n\na = 1\n! x\nb = 2\n"
    assert [(l.number, l.key) for l in parse(text)] == [(3, "a"), (5, "b")]


# --- substitute ------------------------------------------------------------------------------------------------

def test_substitute_env_variable():
    assert substitute("${env:PORT}", {"PORT": "44444"}) == ("44444", [])


def test_substitute_several_references_embedded_in_text():
    value, problems = substitute("/data/${env:APP}/${env:HOST}.log", {"APP": "web", "HOST": "h1"})
    assert (value, problems) == ("/data/web/h1.log", [])


def test_substitute_default_used_when_missing():
    assert substitute("${env:PORT:-5140}", {}) == ("5140", [])
    assert substitute("${env:PORT:-}", {}) == ("", [])


def test_substitute_default_ignored_when_set():
    assert substitute("${env:PORT:-5140}", {"PORT": "9"}) == ("9", [])


def test_substitute_set_but_empty_variable_is_used():
    assert substitute("x${env:EMPTY:-fallback}y", {"EMPTY": ""}) == ("xy", [])


def test_substitute_missing_variable_is_a_problem():
    value, problems = substitute("port ${env:NOPE}", {})
    assert value == "port ${env:NOPE}"
    assert len(problems) == 1
    assert "NOPE" in problems[0] and "not set" in problems[0]


def test_substitute_reports_every_missing_variable():
    value, problems = substitute("${env:A}-${env:B}-${env:C}", {"B": "b"})
    assert value == "${env:A}-b-${env:C}"
    assert len(problems) == 2
    assert "'A'" in problems[0] and "'C'" in problems[1]


def test_substitute_double_dollar_is_literal():
    assert substitute("$${env:HOME}", {"HOME": "/root"}) == ("${env:HOME}", [])
    assert substitute("a$${b}c", {}) == ("a${b}c", [])


@pytest.mark.parametrize("ref", ["${sys:user.home}", "${NAME}", "${f1['key']}"])
def test_substitute_unsupported_reference_is_a_problem(ref):
    value, problems = substitute(f"x{ref}", {"NAME": "n", "user.home": "/h"})
    assert value == f"x{ref}"
    assert len(problems) == 1
    assert "unsupported reference" in problems[0] and ref in problems[0]


@pytest.mark.parametrize("text", ["plain", "$HOME", "cost $5", "${unterminated", "{env:X}", ""])
def test_substitute_leaves_text_without_references_alone(text):
    assert substitute(text, {"HOME": "/h", "X": "x"}) == (text, [])


def test_substitute_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("FLUMERY_TEST_VAR", "from-os")
    assert substitute("${env:FLUMERY_TEST_VAR}") == ("from-os", [])
    monkeypatch.delenv("FLUMERY_TEST_VAR")
    assert substitute("${env:FLUMERY_TEST_VAR}")[1]
