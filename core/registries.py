"""One registry per component kind, keyed by Flume's type names: plain data, in the manner of kombu's transport
aliases.

Each maps Flume's alias (matched case-insensitively) and Flume's class name to a ``"module:Class"`` path that is
imported only when a configuration uses it, so this module imports no component.  Adding a component is one
file plus one line here (see the README's "Writing a component").  A ``module:Class`` path given as a type in an
agent file loads a third-party component the same way.
"""
from __future__ import annotations

from core.registry import Registry

SOURCES = Registry(
    kind="source",
    types={
        "seq": "workers.sources.seq:SeqSource",
        "netcat": "workers.sources.netcat:NetcatSource",
        "exec": "workers.sources.exec:ExecSource",
        "http": "workers.sources.http:HttpSource",
        "TAILDIR": "workers.sources.taildir:TaildirSource",
        "spooldir": "workers.sources.spooldir:SpoolDirectorySource",
        "syslogtcp": "workers.sources.syslogtcp:SyslogTcpSource",
        "multiport_syslogtcp": "workers.sources.multiport_syslogtcp:MultiportSyslogTcpSource",
        "syslogudp": "workers.sources.syslogudp:SyslogUdpSource",
        "netcatudp": "workers.sources.netcatudp:NetcatUdpSource",
        "avro": "workers.sources.avro:AvroSource",
        "thrift": "workers.sources.thrift:ThriftSource",
    },
    flume_classes={
        "org.apache.flume.source.SequenceGeneratorSource": "seq",
        "org.apache.flume.source.NetcatSource": "netcat",
        "org.apache.flume.source.ExecSource": "exec",
        "org.apache.flume.source.http.HTTPSource": "http",
        "org.apache.flume.source.taildir.TaildirSource": "TAILDIR",
        "org.apache.flume.source.SpoolDirectorySource": "spooldir",
        "org.apache.flume.source.SyslogTcpSource": "syslogtcp",
        "org.apache.flume.source.MultiportSyslogTCPSource": "multiport_syslogtcp",
        "org.apache.flume.source.SyslogUDPSource": "syslogudp",
        "org.apache.flume.source.NetcatUdpSource": "netcatudp",
        "org.apache.flume.source.AvroSource": "avro",
        "org.apache.flume.source.ThriftSource": "thrift",
    },
    not_yet=frozenset({
        "jms", "kafka",
        "org.apache.flume.source.jms.JMSSource", "org.apache.flume.source.kafka.KafkaSource",
        "org.apache.flume.source.StressSource",
    }),
)


CHANNELS = Registry(
    kind="channel",
    types={
        "memory": "routing.channels:MemoryChannel",
        "file": "routing.channels:FileChannel",
    },
    flume_classes={
        "org.apache.flume.channel.MemoryChannel": "memory",
        "org.apache.flume.channel.file.FileChannel": "file",
    },
    not_yet=frozenset({"SPILLABLEMEMORY", "jdbc", "kafka",
                       "org.apache.flume.channel.SpillableMemoryChannel",
                       "org.apache.flume.channel.jdbc.JdbcChannel",
                       "org.apache.flume.channel.kafka.KafkaChannel"}),
)


SELECTORS = Registry(
    kind="channel selector",
    types={
        "replicating": "routing.selectors:ReplicatingSelector",
        "multiplexing": "routing.selectors:MultiplexingSelector",
        "load_balancing": "routing.selectors:LoadBalancingSelector",
    },
    flume_classes={
        "org.apache.flume.channel.ReplicatingChannelSelector": "replicating",
        "org.apache.flume.channel.MultiplexingChannelSelector": "multiplexing",
        "org.apache.flume.channel.LoadBalancingChannelSelector": "load_balancing",
    },
)


INTERCEPTORS = Registry(
    kind="interceptor",
    types={
        "timestamp": "workers.interceptors.timestamp:TimestampInterceptor",
        "host": "workers.interceptors.host:HostInterceptor",
        "static": "workers.interceptors.static:StaticInterceptor",
        "regex_filter": "workers.interceptors.regex_filter:RegexFilteringInterceptor",
        "regex_extractor": "workers.interceptors.regex_extractor:RegexExtractorInterceptor",
        "search_replace": "workers.interceptors.search_replace:SearchAndReplaceInterceptor",
        "remove_header": "workers.interceptors.remove_header:RemoveHeaderInterceptor",
        "uuid": "workers.interceptors.uuid_header:UUIDInterceptor",
    },
    flume_classes={
        "org.apache.flume.interceptor.TimestampInterceptor$Builder": "timestamp",
        "org.apache.flume.interceptor.HostInterceptor$Builder": "host",
        "org.apache.flume.interceptor.StaticInterceptor$Builder": "static",
        "org.apache.flume.interceptor.RegexFilteringInterceptor$Builder": "regex_filter",
        "org.apache.flume.interceptor.RegexExtractorInterceptor$Builder": "regex_extractor",
        "org.apache.flume.interceptor.SearchAndReplaceInterceptor$Builder": "search_replace",
        "org.apache.flume.interceptor.RemoveHeaderInterceptor$Builder": "remove_header",
        "org.apache.flume.sink.solr.morphline.UUIDInterceptor$Builder": "uuid",
    },
    not_yet=frozenset({
        "org.apache.flume.sink.solr.morphline.MorphlineInterceptor$Builder",
    }),
)


SINKS = Registry(
    kind="sink",
    types={
        "logger": "workers.sinks.logger:LoggerSink",
        "null": "workers.sinks.null:NullSink",
        "file_roll": "workers.sinks.file_roll:FileRollSink",
        "avro": "workers.sinks.avro:AvroSink",
        "thrift": "workers.sinks.thrift:ThriftSink",
        "hdfs": "workers.sinks.hdfs.sink:HdfsSink",
        "elasticsearch": "workers.sinks.elasticsearch:ElasticsearchSink",
        "mongodb": "workers.sinks.mongodb:MongoSink",
        "hbase": "workers.sinks.hbase:HBaseSink",
        "hbase2": "workers.sinks.hbase:HBaseSink",
        "asynchbase": "workers.sinks.hbase:HBaseSink",
    },
    flume_classes={
        "org.apache.flume.sink.LoggerSink": "logger",
        "org.apache.flume.sink.NullSink": "null",
        "org.apache.flume.sink.RollingFileSink": "file_roll",
        "org.apache.flume.sink.AvroSink": "avro",
        "org.apache.flume.sink.ThriftSink": "thrift",
        "org.apache.flume.sink.hdfs.HDFSEventSink": "hdfs",
        "org.apache.flume.sink.elasticsearch.ElasticSearchSink": "elasticsearch",
        "org.riderzen.flume.sink.MongoSink": "mongodb",
        "org.apache.flume.sink.hbase.HBaseSink": "hbase",
        "org.apache.flume.sink.hbase2.HBase2Sink": "hbase2",
        "org.apache.flume.sink.hbase.AsyncHBaseSink": "asynchbase",
    },
    not_yet=frozenset({
        "irc", "hive", "http",
        "morphline_solr", "kafka",
        "org.apache.flume.sink.irc.IRCSink",
        "org.apache.flume.sink.hive.HiveSink", "org.apache.flume.sink.http.HttpSink",
        "org.apache.flume.sink.kafka.KafkaSink",
        "org.apache.flume.sink.solr.morphline.MorphlineSolrSink",
    }),
)


PROCESSORS = Registry(
    kind="sink processor",
    types={"default": "workers.processors.default:DefaultSinkProcessor",
           "failover": "workers.processors.failover:FailoverSinkProcessor",
           "load_balance": "workers.processors.load_balance:LoadBalancingSinkProcessor"},
    flume_classes={"org.apache.flume.sink.DefaultSinkProcessor": "default",
                   "org.apache.flume.sink.FailoverSinkProcessor": "failover",
                   "org.apache.flume.sink.LoadBalancingSinkProcessor": "load_balance"},
)


ALL = {"source": SOURCES, "sink": SINKS, "channel": CHANNELS, "selector": SELECTORS,
       "interceptor": INTERCEPTORS, "processor": PROCESSORS}
