"""Where the hdfs sink writes: a file system chosen by the scheme of ``hdfs.path``, as Hadoop chooses one.

* ``webhdfs://host:port/...`` (``swebhdfs://`` for HTTPS): WebHDFS at that address, Hadoop's own URI scheme for it.
* ``hdfs://namenode:rpc-port/...``: the same HDFS through its WebHDFS gateway.  The gateway is the sink's
  ``hdfs.webHdfsAddress``; else ``dfs.namenode.http-address`` (``.<nameservice>.<nn>`` for HA) from
  ``$HADOOP_CONF_DIR/hdfs-site.xml``; else the NameNode's host at port 50070 (Hadoop 2's default).
* ``file:///...``: the local file system; every write is fsynced.
* no scheme: ``fs.defaultFS`` from ``$HADOOP_CONF_DIR/core-site.xml``, else ``file:///`` (Hadoop's default).

Every file system offers the same calls (see :class:`LocalFileSystem`), each returning only once the store
confirmed it.
"""
from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from urllib.parse import urlsplit

from workers.sinks.hdfs.webhdfs import WebHdfs
from workers.sinks.local_fs import LocalFileSystem

log = logging.getLogger(__name__)

HADOOP2_HTTP_PORT = 50070


# --- Hadoop's configuration files -------------------------------------------------------------------------------

def hadoop_conf_dir() -> Path | None:
    """``$HADOOP_CONF_DIR``, else ``$HADOOP_HOME/etc/hadoop``, if it exists."""
    for candidate in (os.environ.get("HADOOP_CONF_DIR"),
                      os.environ.get("HADOOP_HOME") and os.path.join(os.environ["HADOOP_HOME"], "etc", "hadoop")):
        if candidate and os.path.isdir(candidate):
            return Path(candidate)
    return None


def hadoop_property(file: str, name: str) -> str | None:
    """A property of ``core-site.xml`` or ``hdfs-site.xml`` in the Hadoop configuration folder, if set."""
    folder = hadoop_conf_dir()
    if folder is None or not (folder / file).exists():
        return None
    try:
        root = ElementTree.parse(folder / file).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        log.warning("cannot read %s: %s", folder / file, exc)
        return None
    for prop in root.iter("property"):
        if (prop.findtext("name") or "").strip() == name:
            return (prop.findtext("value") or "").strip()
    return None


def default_fs() -> str:
    return hadoop_property("core-site.xml", "fs.defaultFS") or hadoop_property(
        "core-site.xml", "fs.default.name") or "file:///"


def gateway_urls(namenode: str, configured: str | None) -> list[str]:
    """The WebHDFS base URLs for ``hdfs://<namenode>`` (host:port or an HA nameservice)."""
    if configured:
        return [address if "://" in address else f"http://{address}"
                for address in (a.strip() for a in configured.split(",")) if address]
    host = namenode.rsplit(":", 1)[0] if ":" in namenode else namenode
    namenodes = hadoop_property("hdfs-site.xml", f"dfs.ha.namenodes.{host}")
    if namenodes:
        found = [hadoop_property("hdfs-site.xml", f"dfs.namenode.http-address.{host}.{nn.strip()}")
                 for nn in namenodes.split(",")]
        return [f"http://{address}" for address in found if address]
    address = hadoop_property("hdfs-site.xml", "dfs.namenode.http-address")
    if address:
        bound_host, _, port = address.rpartition(":")
        return [f"http://{host if bound_host in ('0.0.0.0', '') else bound_host}:{port}"]
    return [f"http://{host}:{HADOOP2_HTTP_PORT}"]


class FileSystems:
    """The file system of each path a sink writes to, made once per scheme and address."""

    def __init__(self, webhdfs_address: str | None, timeout_s: float, proxy_user: str | None):
        self.webhdfs_address = webhdfs_address
        self.timeout_s = timeout_s
        self.proxy_user = proxy_user
        self.made: dict[tuple[str, str], object] = {}

    def resolve(self, path: str) -> tuple[object, str, str]:
        """``(file system, path inside it, the URI prefix that names it)`` for an expanded ``hdfs.path``."""
        if "://" not in path and not path.startswith("file:"):
            base = default_fs().rstrip("/")
            path = base + (path if path.startswith("/") else "/" + path)
        parts = urlsplit(path)
        scheme, authority = parts.scheme.lower(), parts.netloc
        key = (scheme, authority)
        if key not in self.made:
            self.made[key] = self._make(scheme, authority)
        return self.made[key], parts.path or "/", f"{scheme}://{authority}"

    def _make(self, scheme: str, authority: str):
        if scheme == "file":
            return LocalFileSystem()
        if scheme in ("webhdfs", "swebhdfs"):
            http = "https" if scheme == "swebhdfs" else "http"
            return WebHdfs([f"{http}://{authority}"], self.timeout_s, self.proxy_user)
        if scheme == "hdfs":
            urls = gateway_urls(authority, self.webhdfs_address)
            log.info("hdfs://%s is written through WebHDFS at %s", authority, ", ".join(urls))
            return WebHdfs(urls, self.timeout_s, self.proxy_user)
        raise ValueError(f"unsupported file system scheme '{scheme}://' (use hdfs://, webhdfs://, swebhdfs:// "
                         "or file://)")
