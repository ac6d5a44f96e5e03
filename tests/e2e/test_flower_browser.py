"""Flower seen in a real browser: Debian's headless chromium loads Flower's pages (basic auth in the URL) from a
real ``flumery flower`` watching a real agent with two sink workers on its own redis-server
(:mod:`tests.flower_demo`).  The pages are read from the DOM chromium built, after Flower's scripts ran."""
from __future__ import annotations

import re
from html.parser import HTMLParser

from agents import read_lines, wait_until
from flower_demo import FlowerDemo, chromium


class TableRows(HTMLParser):
    """The text of each cell of each body row of the table ``<table id=table_id>``."""

    def __init__(self, table_id: str):
        super().__init__()
        self.table_id, self.depth, self.rows, self.cell = table_id, 0, [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and (self.depth or dict(attrs).get("id") == self.table_id):
            self.depth += 1
        elif self.depth and tag == "tr":
            self.rows.append([])
        elif self.depth and tag == "td":
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "table" and self.depth:
            self.depth -= 1
        elif tag == "td" and self.cell is not None:
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def table(url: str, table_id: str) -> list[list[str]]:
    parser = TableRows(table_id)
    parser.feed(chromium(url, "--dump-dom").stdout)
    return [row for row in parser.rows if row]


def test_flower_shows_the_sink_workers_by_name_and_the_channels_queue_lengths(tmp_path):
    with FlowerDemo(tmp_path) as demo:
        demo.post(60)                       # 600 events into each channel: k1 writes at once, k2 1 s per 10 events
        wait_until(lambda: len(read_lines(demo.out)) >= 600, 60, what="k1 to write its channel's 600 events")

        def workers():
            rows = {row[0]: row for row in table(demo.url + "/workers", "workers-table")}
            return rows if {"k1@a1", "k2@a1"} <= {name.split(".")[0] for name in rows} else None

        # Flower learns of workers started before it from their heartbeats (every 2 s).
        rows = wait_until(workers, 60, what="Flower's workers page to list both sink workers")
        for sink in ("k1", "k2"):
            name = next(n for n in rows if n.startswith(f"{sink}@a1."))
            assert rows[name][1] == "Online", rows[name]
        assert int(rows[next(n for n in rows if n.startswith("k1@"))][3]) >= 1     # processed tasks

        redis = demo.redis.client()
        before = redis.llen("flumery.a1.c2")
        queues = {row[0]: row[1] for row in table(demo.url + "/broker", "queue-table")}
        after = redis.llen("flumery.a1.c2")
        assert queues["flumery.a1.c1"] == "0"
        assert after <= int(queues["flumery.a1.c2"]) <= before and before > 0, (before, queues, after)
        assert queues["flumery.a1.__dead__"] == "0"

        task = demo.task_of("k2")
        page = chromium(f"{demo.url}/task/{task}", "--dump-dom").stdout
        assert "flumery.take" in page and re.search(r"k2@a1\.[^<\s]+", page) and "&lt;10 events&gt;" in page

        # Without the login, chromium gets Flower's 401 and sees no worker.
        anonymous = chromium(demo.anonymous_url + "/workers", "--dump-dom").stdout
        assert "k1@a1" not in anonymous and "workers-table" not in anonymous
