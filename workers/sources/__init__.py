"""Source registry: Flume's source type names (and class names) to Flumery's implementations."""
from app.registry import Registry

SOURCES = Registry(
    kind="source",
    types={
        "seq": "workers.sources.seq:SeqSource",
        "netcat": "workers.sources.netcat:NetcatSource",
        "exec": "workers.sources.exec:ExecSource",
        "http": "workers.sources.http:HttpSource",
        "TAILDIR": "workers.sources.taildir:TaildirSource",
        "spooldir": "workers.sources.spooldir:SpoolDirectorySource",
    },
    flume_classes={
        "org.apache.flume.source.SequenceGeneratorSource": "seq",
        "org.apache.flume.source.NetcatSource": "netcat",
        "org.apache.flume.source.ExecSource": "exec",
        "org.apache.flume.source.http.HTTPSource": "http",
        "org.apache.flume.source.taildir.TaildirSource": "TAILDIR",
        "org.apache.flume.source.SpoolDirectorySource": "spooldir",
    },
    not_yet=frozenset({
        "avro", "thrift", "netcatudp", "syslogtcp", "multiport_syslogtcp", "syslogudp",
        "jms", "kafka",
        "org.apache.flume.source.AvroSource", "org.apache.flume.source.ThriftSource",
        "org.apache.flume.source.NetcatUdpSource", "org.apache.flume.source.SyslogTcpSource",
        "org.apache.flume.source.MultiportSyslogTCPSource", "org.apache.flume.source.SyslogUDPSource",
        "org.apache.flume.source.jms.JMSSource", "org.apache.flume.source.kafka.KafkaSource",
        "org.apache.flume.source.StressSource",
    }),
)
