"""The hdfs sink's properties: Flume's names and defaults (FLUME-REFERENCE.md §3.1-3.2), one added property
(``hdfs.webHdfsAddress``), and the checks Flume makes when it configures the sink, as errors naming the key."""
from __future__ import annotations

import zoneinfo
from dataclasses import dataclass

from core.bucket_path import ROUND_LIMITS, BucketPath
from core.options import non_negative, one_of, opt, positive
from workers.sinks.hdfs.formats import CODEC_NAMES, REFUSED_CODECS, codec_name, serializer_name

FILE_TYPES = ("SequenceFile", "DataStream", "CompressedStream")
TINY_EVENTS = 1000            # rolling below these makes files too small for HDFS (a 128 MiB block each)
TINY_BYTES = 1 << 20


def _serializer(value: str) -> str | None:
    if serializer_name(value):
        return None
    if value == "org.apache.flume.sink.hdfs.AvroEventSerializer$Builder":
        return "Flume's AvroEventSerializer (Avro bodies with a schema header) is not supported yet"
    return "must be TEXT, header_and_text or avro_event (or their Flume Builder class names)"


def _codec(value: str) -> str | None:
    if codec_name(value):
        return None
    if value.lower().removesuffix("codec") in REFUSED_CODECS:
        return "Flumery writes gzip and bzip2 only"
    names = sorted({v for v in CODEC_NAMES.values()})
    return f"unknown codec (supported: {', '.join(names)})"


def _zone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
        return None
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "unknown time zone (use an IANA name such as UTC or Europe/Paris)"


@dataclass(frozen=True)
class HdfsConfig:
    path: str = opt("hdfs.path", doc="directory URI (hdfs://, webhdfs://, file://, or a path on fs.defaultFS), "
                    "with BucketPath escapes")
    file_prefix: str = opt("hdfs.filePrefix", "FlumeData", doc="file name prefix, with BucketPath escapes")
    file_suffix: str = opt("hdfs.fileSuffix", "", doc="file name suffix (replaces the codec's extension)")
    in_use_prefix: str = opt("hdfs.inUsePrefix", "", doc="name prefix while a file is being written")
    in_use_suffix: str = opt("hdfs.inUseSuffix", ".tmp", doc="name suffix while a file is being written")
    empty_in_use_suffix: bool = opt("hdfs.emptyInUseSuffix", False,
                                    doc="no in-use suffix (hdfs.inUseSuffix ignored)")
    roll_interval_s: int = opt("hdfs.rollInterval", 30, check=non_negative,
                               doc="seconds from a file's open to its close; 0 = never by time")
    roll_size: int = opt("hdfs.rollSize", 1024, check=non_negative,
                         doc="body bytes that close a file; 0 = never by size")
    roll_count: int = opt("hdfs.rollCount", 10, check=non_negative, doc="events that close a file; 0 = never by count")
    idle_timeout_s: int = opt("hdfs.idleTimeout", 0, check=non_negative,
                              doc="seconds without a write that close a file; 0 = never")
    batch_size: int = opt("hdfs.batchSize", 100, check=positive, doc="events per write (one append per file)")
    codec: str | None = opt("hdfs.codeC", None, check=_codec, doc="gzip or bzip2 (CompressedStream)")
    file_type: str = opt("hdfs.fileType", "SequenceFile", check=one_of(*FILE_TYPES),
                         doc="SequenceFile, DataStream or CompressedStream")
    max_open_files: int = opt("hdfs.maxOpenFiles", 5000, check=positive,
                              doc="open files kept; the least recently written is closed beyond it")
    write_format: str = opt("hdfs.writeFormat", "Writable", check=one_of("Writable", "Text"),
                            doc="SequenceFile values: Writable (BytesWritable) or Text")
    call_timeout_ms: int = opt("hdfs.callTimeout", 30000, check=positive, doc="timeout of each HDFS call, ms")
    close_tries: int = opt("hdfs.closeTries", 0, doc="attempts to close (rename) a file; 0 or less = until it works")
    retry_interval_s: int = opt("hdfs.retryInterval", 180,
                                doc="seconds between close attempts; 0 or less = one attempt")
    round: bool = opt("hdfs.round", False, doc="round the event time down in the path's time escapes")
    round_value: int = opt("hdfs.roundValue", 1, doc="round down to a multiple of this (1-60, hours 1-24)")
    round_unit: str = opt("hdfs.roundUnit", "second", check=one_of("second", "minute", "hour"),
                          doc="second, minute or hour")
    time_zone: str | None = opt("hdfs.timeZone", None, check=_zone,
                                doc="time zone of the time escapes (default: the local zone)")
    use_local_timestamp: bool = opt("hdfs.useLocalTimeStamp", False,
                                    doc="time escapes use the clock, not the timestamp header")
    proxy_user: str | None = opt("hdfs.proxyUser", None, doc="user to write as (WebHDFS doas)")
    webhdfs_address: str | None = opt(
        "hdfs.webHdfsAddress", None,
        doc="Flumery: host:port of the WebHDFS gateway for hdfs:// paths (several, comma-separated, for HA); "
            "default: dfs.namenode.http-address of $HADOOP_CONF_DIR/hdfs-site.xml, else the NameNode's host "
            "at port 50070")
    serializer: str = opt("serializer", "TEXT", check=_serializer,
                          doc="DataStream/CompressedStream: TEXT, header_and_text or avro_event")
    append_newline: bool = opt("serializer.appendNewline", True, doc="TEXT, header_and_text: end events with \\n")
    avro_sync_interval: int = opt("serializer.syncIntervalBytes", 2048000, check=positive,
                                  doc="avro_event: bytes per Avro block at most")
    avro_codec: str = opt("serializer.compressionCodec", "null", check=one_of("null", "deflate"),
                          doc="avro_event: null or deflate")
    kerberos_principal: str | None = opt("hdfs.kerberosPrincipal", None, doc="refused: Kerberos is not supported")
    kerberos_keytab: str | None = opt("hdfs.kerberosKeytab", None, doc="refused: Kerberos is not supported")
    min_block_replicas: int | None = opt("hdfs.minBlockReplicas", None,
                                         inert="WebHDFS does not report a write pipeline's replicas")
    threads_pool_size: int = opt("hdfs.threadsPoolSize", 10, inert="one writer per worker process")
    roll_timer_pool_size: int = opt("hdfs.rollTimerPoolSize", 1, inert="one roll timer per sink")
    use_raw_local_fs: bool = opt("hdfs.useRawLocalFileSystem", False,
                                 inert="file:// writes are always written through and fsynced")


def check(config: HdfsConfig) -> list[tuple[str, str]]:
    """Flume's HDFSEventSink.configure checks, and Flumery's own, as (property, message) pairs."""
    problems = []
    if config.round:
        limit = ROUND_LIMITS[config.round_unit.lower()]
        if not 0 < config.round_value <= limit:
            problems.append(("hdfs.roundValue", f"must be > 0 and <= {limit} with hdfs.roundUnit = "
                             f"{config.round_unit} (got '{config.round_value}')"))
    file_type = config.file_type.lower()
    if file_type == "compressedstream" and not config.codec:
        problems.append(("hdfs.codeC", "required when hdfs.fileType is CompressedStream (gzip or bzip2)"))
    if config.codec and file_type == "datastream":
        problems.append(("hdfs.codeC", f"hdfs.fileType DataStream writes no compressed output (got "
                         f"'{config.codec}'); use CompressedStream, or remove hdfs.codeC"))
    if config.codec and file_type == "sequencefile":
        problems.append(("hdfs.codeC", f"block-compressed SequenceFiles are not supported yet (got "
                         f"'{config.codec}'); use hdfs.fileType = CompressedStream"))
    for key, template in (("hdfs.path", config.path), ("hdfs.filePrefix", config.file_prefix)):
        try:
            BucketPath(template)
        except ValueError as exc:
            problems.append((key, f"{exc} (got '{template}')"))
    scheme = config.path.split("://", 1)[0].lower() if "://" in config.path else ""
    if scheme and scheme not in ("hdfs", "webhdfs", "swebhdfs", "file"):
        problems.append(("hdfs.path", f"unsupported scheme '{scheme}://' (use hdfs://, webhdfs://, swebhdfs:// "
                         f"or file://; got '{config.path}')"))
    for key, value in (("hdfs.kerberosPrincipal", config.kerberos_principal),
                       ("hdfs.kerberosKeytab", config.kerberos_keytab)):
        if value:
            problems.append((key, f"Kerberos (SPNEGO) is not supported by Flumery's hdfs sink yet (got '{value}')"))
    return problems


def advice(config: HdfsConfig) -> list[tuple[str, str]]:
    """Notices for settings that work but hurt: rolling that makes many tiny files (Flume's defaults do)."""
    notes = []
    if 0 < config.roll_count < TINY_EVENTS:
        notes.append(("hdfs.rollCount", f"= {config.roll_count}: every file closes after {config.roll_count} "
                      "events, so the sink makes many tiny files (each costs the NameNode memory and a reader a "
                      "seek); set hdfs.rollCount = 0 and roll by hdfs.rollSize (e.g. 134217728) or "
                      "hdfs.rollInterval"))
    if 0 < config.roll_size < TINY_BYTES:
        notes.append(("hdfs.rollSize", f"= {config.roll_size}: every file closes after {config.roll_size} bytes "
                      "of bodies, so the sink makes many tiny files; an HDFS block is 134217728 bytes"))
    return notes
