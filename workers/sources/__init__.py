"""Source registry: Flume's source type names (and class names) to Flumery's implementations."""
from app.registry import Registry

SOURCES = Registry(
    kind="source",
    types={
        "seq": "workers.sources.seq:SeqSource",
        "netcat": "workers.sources.netcat:NetcatSource",
        "exec": "workers.sources.exec:ExecSource",
        "http": "workers.sources.http:HttpSource",
    },
    flume_classes={
        "org.apache.flume.source.SequenceGeneratorSource": "seq",
        "org.apache.flume.source.NetcatSource": "netcat",
        "org.apache.flume.source.ExecSource": "exec",
        "org.apache.flume.source.http.HTTPSource": "http",
    },
    not_yet=frozenset({
        "avro", "thrift", "spooldir", "TAILDIR", "netcatudp", "syslogtcp", "multiport_syslogtcp", "syslogudp",
        "jms", "kafka",
        "org.apache.flume.source.AvroSource", "org.apache.flume.source.ThriftSource",
        "org.apache.flume.source.SpoolDirectorySource", "org.apache.flume.source.taildir.TaildirSource",
        "org.apache.flume.source.NetcatUdpSource", "org.apache.flume.source.SyslogTcpSource",
        "org.apache.flume.source.MultiportSyslogTCPSource", "org.apache.flume.source.SyslogUDPSource",
        "org.apache.flume.source.jms.JMSSource", "org.apache.flume.source.kafka.KafkaSource",
        "org.apache.flume.source.StressSource",
    }),
)
