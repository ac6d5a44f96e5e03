"""Interceptor registry: Flume's interceptor type names (and Builder class names) to implementations."""
from app.registry import Registry

INTERCEPTORS = Registry(
    kind="interceptor",
    types={},
    flume_classes={},
    not_yet=frozenset({
        "timestamp", "host", "static", "regex_filter", "regex_extractor", "search_replace", "remove_header",
        "org.apache.flume.interceptor.TimestampInterceptor$Builder",
        "org.apache.flume.interceptor.HostInterceptor$Builder",
        "org.apache.flume.interceptor.StaticInterceptor$Builder",
        "org.apache.flume.interceptor.RegexFilteringInterceptor$Builder",
        "org.apache.flume.interceptor.RegexExtractorInterceptor$Builder",
        "org.apache.flume.interceptor.SearchAndReplaceInterceptor$Builder",
        "org.apache.flume.interceptor.RemoveHeaderInterceptor$Builder",
        "org.apache.flume.sink.solr.morphline.UUIDInterceptor$Builder",
    }),
)
