"""Sink processor registry: Flume's processor type names (and class names) to implementations."""
from app.registry import Registry

PROCESSORS = Registry(
    kind="sink processor",
    types={"default": "workers.processors.default:DefaultSinkProcessor",
           "failover": "workers.processors.failover:FailoverSinkProcessor",
           "load_balance": "workers.processors.load_balance:LoadBalancingSinkProcessor"},
    flume_classes={"org.apache.flume.sink.DefaultSinkProcessor": "default",
                   "org.apache.flume.sink.FailoverSinkProcessor": "failover",
                   "org.apache.flume.sink.LoadBalancingSinkProcessor": "load_balance"},
)
