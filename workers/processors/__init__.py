"""Sink processor registry: Flume's processor type names (and class names) to implementations."""
from app.registry import Registry

PROCESSORS = Registry(
    kind="sink processor",
    types={"default": "workers.processors.default:DefaultSinkProcessor"},
    flume_classes={"org.apache.flume.sink.DefaultSinkProcessor": "default"},
    not_yet=frozenset({"failover", "load_balance",
                       "org.apache.flume.sink.FailoverSinkProcessor",
                       "org.apache.flume.sink.LoadBalancingSinkProcessor"}),
)
