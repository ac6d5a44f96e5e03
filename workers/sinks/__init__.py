"""Sink registry: Flume's sink type names (and class names) to Flumery's implementations."""
from app.registry import Registry

SINKS = Registry(
    kind="sink",
    types={
        "logger": "workers.sinks.logger:LoggerSink",
        "null": "workers.sinks.null:NullSink",
        "file_roll": "workers.sinks.file_roll:FileRollSink",
    },
    flume_classes={
        "org.apache.flume.sink.LoggerSink": "logger",
        "org.apache.flume.sink.NullSink": "null",
        "org.apache.flume.sink.RollingFileSink": "file_roll",
    },
    not_yet=frozenset({
        "hdfs", "hbase", "hbase2", "asynchbase", "avro", "thrift", "irc", "hive", "http", "elasticsearch",
        "morphline_solr", "kafka",
        "org.apache.flume.sink.hdfs.HDFSEventSink", "org.apache.flume.sink.hbase.HBaseSink",
        "org.apache.flume.sink.hbase2.HBase2Sink", "org.apache.flume.sink.hbase.AsyncHBaseSink",
        "org.apache.flume.sink.AvroSink", "org.apache.flume.sink.ThriftSink", "org.apache.flume.sink.irc.IRCSink",
        "org.apache.flume.sink.hive.HiveSink", "org.apache.flume.sink.http.HttpSink",
        "org.apache.flume.sink.elasticsearch.ElasticSearchSink", "org.apache.flume.sink.kafka.KafkaSink",
        "org.apache.flume.sink.solr.morphline.MorphlineSolrSink",
    }),
)
