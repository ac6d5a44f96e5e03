"""A small HBase Thrift1 gateway for tests: happybase's own ``Hbase.thrift`` served with thriftpy2, tables in
memory.  No HBase can be installed on these machines; this is the stand-in the ``hbase`` sink's tests, chaos runs
and benchmark talk to, over a real socket with happybase (buffered transport, binary protocol: its defaults).

    python tests/hbase_gateway.py --port 9090 [--snapshot FILE]

It implements what happybase calls, with HBase's semantics where a client can see them:

* tables: ``getTableNames``, ``createTable`` (AlreadyExists), ``deleteTable`` (only when disabled, as HBase),
  ``enableTable``/``disableTable``/``isTableEnabled``, ``getColumnDescriptors``, ``getTableRegions`` (one region);
* writes: ``mutateRow(s)[Ts]`` (puts and deletes; a column of a family the table does not have is an IOError,
  as HBase's NoSuchColumnFamilyException; a disabled or missing table is an IOError), ``atomicIncrement`` (an
  8-byte big-endian counter, as HBase stores it), ``deleteAll``/``deleteAllRow``;
* reads: ``getRow(s)[WithColumns][Ts]``, ``getVer[Ts]`` (cell versions, newest first, at most the family's
  ``maxVersions``), ``scannerOpen*`` / ``scannerGetList`` / ``scannerGet`` / ``scannerClose`` (rows in byte
  order, start inclusive, stop exclusive, optional prefix and columns).

Every cell keeps its versions (timestamped in ms), so a test can see that a retried write rewrote the same
cell rather than adding a row.  On SIGTERM the tables are written to ``--snapshot`` (if given) and loaded
again at the next start, so a stop and restart keeps the data (what a region server's storage would do).
"""
from __future__ import annotations

import argparse
import base64
import bisect
import itertools
import json
import os
import signal
import struct
import sys
import threading
import time
from pathlib import Path

import happybase
import thriftpy2
from thriftpy2.rpc import make_server

Hbase = thriftpy2.load(str(Path(happybase.__file__).parent / "Hbase.thrift"), module_name="Hbase_gateway_thrift")


def _now_ms() -> int:
    return int(time.time() * 1000)


class Table:
    def __init__(self, families: dict[bytes, int]):
        self.families = families                           # family -> maxVersions
        self.enabled = True
        self.rows: dict[bytes, dict[bytes, list[tuple[int, bytes]]]] = {}   # row -> column -> [(ts, value)]
        self.keys: list[bytes] = []                         # sorted row keys

    def put(self, row: bytes, column: bytes, value: bytes, ts: int) -> None:
        cells = self.rows.get(row)
        if cells is None:
            cells = self.rows[row] = {}
            bisect.insort(self.keys, row)
        # A put at the timestamp of an existing version replaces it, as in HBase.
        versions = [v for v in cells.get(column, []) if v[0] != ts]
        versions.insert(0, (ts, value))
        versions.sort(key=lambda v: -v[0])
        cells[column] = versions
        del versions[self.families[column.split(b":", 1)[0]]:]

    def delete(self, row: bytes, column: bytes | None) -> None:
        cells = self.rows.get(row)
        if cells is None:
            return
        if column is None:
            cells.clear()
        elif b":" not in column.rstrip(b":"):            # a family alone: every column of it, as HBase
            family = column.rstrip(b":") + b":"
            for name in [c for c in cells if c.startswith(family)]:
                del cells[name]
        else:
            cells.pop(column, None)
        if not cells:
            del self.rows[row]
            self.keys.remove(row)


class Handler:
    """The Hbase service, in memory.  One lock: the gateway serves tests, not throughput records."""

    def __init__(self, snapshot: Path | None):
        self.tables: dict[bytes, Table] = {}
        self.scanners: dict[int, list] = {}
        self.scanner_ids = itertools.count(1)
        self.lock = threading.RLock()
        self.snapshot = snapshot
        if snapshot and snapshot.exists():
            self._load(json.loads(snapshot.read_text()))

    # --- helpers ------------------------------------------------------------------------------------------

    def _table(self, name: bytes, enabled: bool = True) -> Table:
        table = self.tables.get(name)
        if table is None:
            raise Hbase.IOError(message=f"org.apache.hadoop.hbase.TableNotFoundException: {name.decode()}")
        if enabled and not table.enabled:
            raise Hbase.IOError(message=f"org.apache.hadoop.hbase.TableNotEnabledException: {name.decode()}")
        return table

    def _check_column(self, table: Table, name: bytes, column: bytes) -> None:
        family = column.split(b":", 1)[0]
        if family not in table.families:
            raise Hbase.IOError(message="org.apache.hadoop.hbase.regionserver.NoSuchColumnFamilyException: "
                                f"Column family {family.decode()} does not exist in region {name.decode()}")

    def _result(self, table: Table, row: bytes, columns, ts: int | None = None):
        cells = table.rows.get(row)
        if not cells:
            return None
        out = {}
        for column, versions in cells.items():
            if columns and column not in columns and column.split(b":", 1)[0] not in columns \
                    and column.split(b":", 1)[0] + b":" not in columns:
                continue
            version = next(((t, v) for t, v in versions if ts is None or t < ts), None)
            if version is not None:
                out[column] = Hbase.TCell(value=version[1], timestamp=version[0])
        return Hbase.TRowResult(row=row, columns=out) if out else None

    # --- tables -------------------------------------------------------------------------------------------

    def getTableNames(self):
        with self.lock:
            return sorted(self.tables)

    def createTable(self, tableName, columnFamilies):
        with self.lock:
            if tableName in self.tables:
                raise Hbase.AlreadyExists(message=f"table name already in use: {tableName.decode()}")
            if not columnFamilies:
                raise Hbase.IllegalArgument(message="a table needs at least one column family")
            self.tables[tableName] = Table({cf.name.rstrip(b":"): cf.maxVersions or 3 for cf in columnFamilies})

    def deleteTable(self, tableName):
        with self.lock:
            table = self._table(tableName, enabled=False)
            if table.enabled:
                raise Hbase.IOError(message=f"org.apache.hadoop.hbase.TableNotDisabledException: "
                                    f"{tableName.decode()}")
            del self.tables[tableName]

    def enableTable(self, tableName):
        with self.lock:
            self._table(tableName, enabled=False).enabled = True

    def disableTable(self, tableName):
        with self.lock:
            self._table(tableName, enabled=False).enabled = False

    def isTableEnabled(self, tableName):
        with self.lock:
            return self._table(tableName, enabled=False).enabled

    def compact(self, tableNameOrRegionName):
        pass

    def majorCompact(self, tableNameOrRegionName):
        pass

    def getColumnDescriptors(self, tableName):
        with self.lock:
            table = self._table(tableName, enabled=False)
            return {f + b":": Hbase.ColumnDescriptor(name=f + b":", maxVersions=v) for f, v in table.families.items()}

    def getTableRegions(self, tableName):
        with self.lock:
            self._table(tableName, enabled=False)
            return [Hbase.TRegionInfo(startKey=b"", endKey=b"", id=1, name=tableName + b",,1", version=1,
                                      serverName=b"127.0.0.1", port=0)]

    # --- writes -------------------------------------------------------------------------------------------

    def mutateRowsTs(self, tableName, rowBatches, timestamp, attributes=None):
        with self.lock:
            table = self._table(tableName)
            for batch in rowBatches:                  # check everything first: a batch applies whole or not
                for m in batch.mutations:
                    self._check_column(table, tableName, m.column)
            for batch in rowBatches:
                for m in batch.mutations:
                    if m.isDelete:
                        table.delete(batch.row, m.column)
                    else:
                        table.put(batch.row, m.column, m.value or b"", timestamp)

    def mutateRows(self, tableName, rowBatches, attributes=None):
        self.mutateRowsTs(tableName, rowBatches, _now_ms(), attributes)

    def mutateRow(self, tableName, row, mutations, attributes=None):
        self.mutateRows(tableName, [Hbase.BatchMutation(row=row, mutations=mutations)], attributes)

    def mutateRowTs(self, tableName, row, mutations, timestamp, attributes=None):
        self.mutateRowsTs(tableName, [Hbase.BatchMutation(row=row, mutations=mutations)], timestamp, attributes)

    def atomicIncrement(self, tableName, row, column, value):
        with self.lock:
            table = self._table(tableName)
            self._check_column(table, tableName, column)
            versions = table.rows.get(row, {}).get(column)
            current = 0
            if versions:
                raw = versions[0][1]
                if len(raw) != 8:
                    raise Hbase.IOError(message="org.apache.hadoop.hbase.DoNotRetryIOException: Field is not a "
                                        "long, it's " + str(len(raw)) + " bytes wide")
                current = struct.unpack(">q", raw)[0]
            current += value
            table.put(row, column, struct.pack(">q", current), _now_ms())
            return current

    def deleteAll(self, tableName, row, column, attributes=None):
        with self.lock:
            self._table(tableName).delete(row, column)

    def deleteAllRow(self, tableName, row, attributes=None):
        with self.lock:
            self._table(tableName).delete(row, None)

    # --- reads --------------------------------------------------------------------------------------------

    def getRowWithColumnsTs(self, tableName, row, columns, timestamp, attributes=None):
        with self.lock:
            result = self._result(self._table(tableName), row, columns, timestamp)
            return [result] if result else []

    def getRowWithColumns(self, tableName, row, columns, attributes=None):
        return self.getRowWithColumnsTs(tableName, row, columns, None, attributes)

    def getRow(self, tableName, row, attributes=None):
        return self.getRowWithColumnsTs(tableName, row, None, None, attributes)

    def getRowTs(self, tableName, row, timestamp, attributes=None):
        return self.getRowWithColumnsTs(tableName, row, None, timestamp, attributes)

    def getRowsWithColumnsTs(self, tableName, rows, columns, timestamp, attributes=None):
        with self.lock:
            table = self._table(tableName)
            return [r for r in (self._result(table, row, columns, timestamp) for row in rows) if r]

    def getRowsWithColumns(self, tableName, rows, columns, attributes=None):
        return self.getRowsWithColumnsTs(tableName, rows, columns, None, attributes)

    def getRows(self, tableName, rows, attributes=None):
        return self.getRowsWithColumnsTs(tableName, rows, None, None, attributes)

    def getRowsTs(self, tableName, rows, timestamp, attributes=None):
        return self.getRowsWithColumnsTs(tableName, rows, None, timestamp, attributes)

    def getVerTs(self, tableName, row, column, timestamp, numVersions, attributes=None):
        with self.lock:
            versions = self._table(tableName).rows.get(row, {}).get(column, [])
            cells = [Hbase.TCell(value=v, timestamp=t) for t, v in versions if timestamp is None or t < timestamp]
            return cells[:numVersions]

    def getVer(self, tableName, row, column, numVersions, attributes=None):
        return self.getVerTs(tableName, row, column, None, numVersions, attributes)

    def _open_scanner(self, tableName, start, stop, columns, timestamp=None, prefix=None) -> int:
        with self.lock:
            table = self._table(tableName)
            first = bisect.bisect_left(table.keys, start or b"")
            keys = []
            for key in table.keys[first:]:
                if stop and key >= stop:
                    break
                if prefix is not None and not key.startswith(prefix):
                    if key > prefix:
                        break
                    continue
                keys.append(key)
            results = [r for r in (self._result(table, k, columns, timestamp) for k in keys) if r]
            scanner = next(self.scanner_ids)
            self.scanners[scanner] = results
            return scanner

    def scannerOpenWithScan(self, tableName, scan, attributes=None):
        return self._open_scanner(tableName, scan.startRow, scan.stopRow, scan.columns, scan.timestamp)

    def scannerOpen(self, tableName, startRow, columns, attributes=None):
        return self._open_scanner(tableName, startRow, None, columns)

    def scannerOpenWithStop(self, tableName, startRow, stopRow, columns, attributes=None):
        return self._open_scanner(tableName, startRow, stopRow, columns)

    def scannerOpenWithPrefix(self, tableName, startAndPrefix, columns, attributes=None):
        return self._open_scanner(tableName, startAndPrefix, None, columns, prefix=startAndPrefix)

    def scannerOpenTs(self, tableName, startRow, columns, timestamp, attributes=None):
        return self._open_scanner(tableName, startRow, None, columns, timestamp)

    def scannerOpenWithStopTs(self, tableName, startRow, stopRow, columns, timestamp, attributes=None):
        return self._open_scanner(tableName, startRow, stopRow, columns, timestamp)

    def scannerGetList(self, id, nbRows):
        with self.lock:
            results = self.scanners.get(id)
            if results is None:
                raise Hbase.IllegalArgument(message=f"scanner ID {id} is invalid")
            chunk, self.scanners[id] = results[:nbRows], results[nbRows:]
            return chunk

    def scannerGet(self, id):
        return self.scannerGetList(id, 1)

    def scannerClose(self, id):
        with self.lock:
            if self.scanners.pop(id, None) is None:
                raise Hbase.IllegalArgument(message=f"scanner ID {id} is invalid")

    # --- snapshot -----------------------------------------------------------------------------------------

    def save(self) -> None:
        if not self.snapshot:
            return
        with self.lock:
            data = {_b64(name): {"families": {_b64(f): v for f, v in t.families.items()}, "enabled": t.enabled,
                                 "rows": {_b64(r): {_b64(c): [[ts, _b64(v)] for ts, v in versions]
                                                    for c, versions in cells.items()}
                                          for r, cells in t.rows.items()}}
                    for name, t in self.tables.items()}
            tmp = self.snapshot.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.snapshot)

    def _load(self, data: dict) -> None:
        for name, t in data.items():
            table = Table({_unb64(f): v for f, v in t["families"].items()})
            table.enabled = t["enabled"]
            for row, cells in t["rows"].items():
                table.rows[_unb64(row)] = {_unb64(c): [(ts, _unb64(v)) for ts, v in versions]
                                           for c, versions in cells.items()}
            table.keys = sorted(table.rows)
            self.tables[_unb64(name)] = table


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--snapshot", type=Path, help="file the tables are saved to on SIGTERM, loaded at start")
    args = parser.parse_args()
    handler = Handler(args.snapshot)

    def stop(signum, frame):
        # Keep the lock until the process is gone: a write applied after the snapshot must not be answered.
        handler.lock.acquire()
        handler.save()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = make_server(Hbase.Hbase, handler, args.host, args.port, client_timeout=None)
    print(f"hbase gateway on {args.host}:{args.port}", flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
