"""Interceptor registry: Flume's interceptor type names (and Builder class names) to implementations.

Flume resolves its aliases case-insensitively (``InterceptorType.valueOf(type.toUpperCase())``), as the registry
does.  ``uuid`` is Flumery's alias for the morphline module's UUIDInterceptor, which Flume names only by class.
"""
from app.registry import Registry

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
