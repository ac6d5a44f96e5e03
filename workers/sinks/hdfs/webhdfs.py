"""A small WebHDFS client on ``requests``: the REST calls the hdfs sink needs, with Hadoop's errors mapped to
Python's.

Why ``requests`` and not the ``hdfs`` package (HdfsCLI): the sink needs ``TRUNCATE`` (to cut a torn or doubled
batch off an in-use file), which HdfsCLI 2.7 does not offer, and it needs to see each call's outcome (a confirmed
append is the acknowledgement that lets the channel message go), where HdfsCLI retries and streams on threads of its
own.  Eight REST operations over one ``requests.Session`` are less code than working around either.

Contract: every method returns only after the gateway answered success; it raises ``FileNotFoundError``,
``FileExistsError``, :class:`LeaseBusy` (the file is being recovered or still held by a writer that died: try
again shortly) or :class:`WebHdfsError` (any other failure, network errors included).  ``create`` and ``append``
are the two-step calls of the protocol: the NameNode redirects to a DataNode, which takes the data and answers once
the data is in the pipeline and the file is closed.
"""
from __future__ import annotations

import getpass
import os
from urllib.parse import quote

import requests


class WebHdfsError(OSError):
    """A WebHDFS call failed; ``exception`` is Hadoop's exception class name when the server gave one."""

    def __init__(self, message: str, exception: str = ""):
        super().__init__(message)
        self.exception = exception


class LeaseBusy(WebHdfsError):
    """The file is under lease or block recovery (after a truncate, or a writer that died): retry later."""


_BUSY = {"RecoveryInProgressException", "AlreadyBeingCreatedException", "LeaseExpiredException"}


def hadoop_user() -> str:
    """The user WebHDFS calls act as (``user.name``): ``HADOOP_USER_NAME``, else the login user, as Hadoop."""
    return os.environ.get("HADOOP_USER_NAME") or getpass.getuser()


class WebHdfs:
    """WebHDFS at ``urls`` (``http://host:port``; several for HA NameNodes: a standby is skipped)."""

    def __init__(self, urls: list[str], timeout_s: float = 30.0, proxy_user: str | None = None,
                 user: str | None = None):
        self.urls = list(urls)
        self.timeout_s = timeout_s
        self.user = user or hadoop_user()
        self.proxy_user = proxy_user
        self.session = requests.Session()

    def __repr__(self) -> str:
        return f"WebHdfs({', '.join(self.urls)})"

    # -- the operations ------------------------------------------------------------------------------------------
    def create(self, path: str, data: bytes, length: int | None = None) -> None:
        """Create ``path`` (parents too) holding ``data``; FileExistsError if it exists.  See :meth:`append`
        for ``length``."""
        location = self._redirect("PUT", path, "CREATE", overwrite="false")
        self._send("PUT", location, data, path)
        self._verify(path, length)

    def append(self, path: str, data: bytes, length: int | None = None) -> None:
        """Append ``data``.  With ``length`` (the file's length once the append is in), the NameNode is asked
        afterwards: Hadoop 2.7's DataNode answers a WebHDFS write 200 even when closing the file failed (its
        WebHdfsHandler swallows the close error, e.g. while the NameNode restarts), so the answer alone does
        not prove the append is in the file."""
        location = self._redirect("POST", path, "APPEND")
        self._send("POST", location, data, path)
        self._verify(path, length)

    def _verify(self, path: str, length: int | None) -> None:
        if length is None:
            return
        actual = self.length(path)
        if actual != length:
            raise WebHdfsError(f"WebHDFS write to {path} was answered, but the NameNode has the file at "
                               f"{actual} bytes, not {length}: the write is not confirmed")

    def length(self, path: str) -> int | None:
        """The file's length, or None if there is no such file."""
        try:
            return int(self._call("GET", path, "GETFILESTATUS").json()["FileStatus"]["length"])
        except FileNotFoundError:
            return None

    def truncate(self, path: str, length: int) -> bool:
        """Cut the file to ``length`` bytes.  False when HDFS finishes it by block recovery: appends then raise
        LeaseBusy for a moment."""
        return bool(self._call("POST", path, "TRUNCATE", newlength=str(length)).json().get("boolean"))

    def rename(self, source: str, target: str) -> bool:
        """Rename; False if ``source`` does not exist.  FileExistsError if ``target`` does."""
        if self.length(target) is not None:
            raise FileExistsError(f"{target} exists")
        return bool(self._call("PUT", source, "RENAME", destination=target).json().get("boolean"))

    def delete(self, path: str) -> bool:
        return bool(self._call("DELETE", path, "DELETE", recursive="false").json().get("boolean"))

    def list(self, path: str) -> list[dict]:
        return self._call("GET", path, "LISTSTATUS").json()["FileStatuses"]["FileStatus"]

    # -- HTTP ----------------------------------------------------------------------------------------------------
    def _params(self, op: str, extra: dict) -> dict:
        params = {"op": op, "user.name": self.user, **extra}
        if self.proxy_user:
            params["doas"] = self.proxy_user
        return params

    def _call(self, method: str, path: str, op: str, **extra) -> requests.Response:
        last: Exception | None = None
        for index, base in enumerate(list(self.urls)):
            url = f"{base.rstrip('/')}/webhdfs/v1{quote(path)}"
            try:
                response = self.session.request(method, url, params=self._params(op, extra),
                                                timeout=self.timeout_s, allow_redirects=False)
            except requests.RequestException as exc:
                last = WebHdfsError(f"WebHDFS {op} {path} at {base}: {exc}")
                continue
            if response.status_code < 400:
                if index:                           # remember the NameNode that answered (HA): ask it first
                    self.urls.insert(0, self.urls.pop(index))
                return response
            error = _error(response, op, path)
            if getattr(error, "exception", "") == "StandbyException":
                last = error
                continue
            raise error
        raise last or WebHdfsError(f"WebHDFS {op} {path}: no gateway address")

    def _redirect(self, method: str, path: str, op: str, **extra) -> str:
        response = self._call(method, path, op, **extra)
        location = response.headers.get("Location")
        if response.status_code != 307 or not location:
            raise WebHdfsError(f"WebHDFS {op} {path}: expected a redirect to a DataNode, got HTTP "
                               f"{response.status_code}")
        return location

    def _send(self, method: str, location: str, data: bytes, path: str) -> None:
        try:
            response = self.session.request(method, location, data=data, timeout=self.timeout_s,
                                            headers={"Content-Type": "application/octet-stream"})
        except requests.RequestException as exc:
            raise WebHdfsError(f"WebHDFS write of {len(data)} bytes to {path}: {exc}") from None
        if response.status_code >= 400:
            raise _error(response, method, path)


def _error(response: requests.Response, op: str, path: str) -> OSError:
    try:
        remote = response.json()["RemoteException"]
        exception, message = remote.get("exception", ""), remote.get("message", "")
    except (ValueError, KeyError, TypeError):
        exception, message = "", response.text[:300]
    text = f"WebHDFS {op} {path}: HTTP {response.status_code} {exception}: {message}"
    if exception == "FileNotFoundException" or response.status_code == 404:
        return FileNotFoundError(text)
    if exception == "FileAlreadyExistsException":
        return FileExistsError(text)
    if exception in _BUSY:
        return LeaseBusy(text, exception)
    return WebHdfsError(text, exception)
