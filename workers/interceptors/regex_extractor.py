"""``regex_extractor``: Flume's RegexExtractorInterceptor, regex groups of the body into headers.

Properties, as in Flume: ``regex`` (required, a Java regex), ``serializers`` (required: whitespace-separated
serializer names, one per group in order), and per serializer ``serializers.<n>.name`` (required: the header) and
``serializers.<n>.type``: ``DEFAULT`` (the group's text as is) or
``org.apache.flume.interceptor.RegexExtractorInterceptorMillisSerializer`` (``millis`` also accepted), which reads
the group with the Joda pattern ``serializers.<n>.pattern`` into epoch milliseconds, in the process's local time
zone (Flume: the JVM's) unless the text names a zone (see :mod:`core.joda`).

The regex is searched for in the body read as UTF-8 (Java ``find()``); only the first match counts.  Group ``i``
goes through serializer ``i``; groups beyond the serializers are ignored, serializers beyond the groups unused.

Where Flume fails on an event, Flumery keeps the event and skips the one header: a group that did not take part
in the match (Flume would store a null header value), and a value the millis serializer cannot parse (Flume
throws from the interceptor chain, so the source retries the batch forever).  The latter is logged.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from core import java_regex, joda
from core.event import Event
from core.options import opt
from core.registry import did_you_mean
from workers.interceptors.base import Interceptor, InterceptorContext

log = logging.getLogger(__name__)

PASS_THROUGH_CLASS = "org.apache.flume.interceptor.RegexExtractorInterceptorPassThroughSerializer"
MILLIS_CLASS = "org.apache.flume.interceptor.RegexExtractorInterceptorMillisSerializer"
# type value -> serializer kind; Flume's own spellings first, then Flumery's short aliases.
SERIALIZER_TYPES = {"DEFAULT": "default", PASS_THROUGH_CLASS: "default", MILLIS_CLASS: "millis",
                    "default": "default", "millis": "millis"}
SERIALIZER_PROPERTIES = {"default": ("name", "type"), "millis": ("name", "type", "pattern")}


def _non_empty_list(names: list[str]) -> str | None:
    return None if names else "must name at least one serializer"


def serializer_kind(type_name: str) -> str | None:
    """``default`` or ``millis`` for a ``serializers.<n>.type`` value (aliases in any case), else None."""
    return SERIALIZER_TYPES.get(type_name) or SERIALIZER_TYPES.get(type_name.lower())


@dataclass(frozen=True)
class RegexExtractorConfig:
    regex: str = opt("regex", check=java_regex.check_non_empty, doc="Java regex searched for in the body")
    serializers: list[str] = opt("serializers", check=_non_empty_list,
                                 doc="serializer names, one per regex group, in group order")
    serializer_props: dict = opt("serializers.*", doc="serializers.<n>.name / .type / .pattern")

    def props_of(self, serializer: str) -> dict[str, str]:
        stem = serializer + "."
        return {k[len(stem):]: v for k, v in self.serializer_props.items() if k.startswith(stem)}

    def problems(self) -> list[tuple[str, str]]:
        problems = self._unknown_keys()
        for serializer in dict.fromkeys(self.serializers):
            problems += self._check_serializer(serializer, self.props_of(serializer))
        return problems

    def _unknown_keys(self) -> list[tuple[str, str]]:
        problems = []
        listed = list(dict.fromkeys(self.serializers))
        for key in sorted(self.serializer_props):
            owner = next((s for s in listed if key.startswith(s + ".")), None)
            if key in listed:
                problems.append((f"serializers.{key}", f"a serializer is configured by serializers.{key}.name, "
                                 f".type and .pattern"))
            elif owner is None:
                problems.append((f"serializers.{key}", "belongs to no serializer listed in serializers ("
                                 + " ".join(listed) + ")" + did_you_mean(key.partition(".")[0], listed)))
        return problems

    def _check_serializer(self, serializer: str, props: dict[str, str]) -> list[tuple[str, str]]:
        key = f"serializers.{serializer}"
        problems = []
        if not props.get("name"):
            problems.append((f"{key}.name", "required property is missing (the header to set)"
                             if "name" not in props else "must not be empty"))
        type_name = props.get("type", "DEFAULT")
        kind = serializer_kind(type_name)
        if kind is None:
            known = ", ".join(["DEFAULT", "millis", MILLIS_CLASS])
            return problems + [(f"{key}.type", f"unknown serializer type (got '{type_name}'; known: {known})"
                                + did_you_mean(type_name, list(SERIALIZER_TYPES)))]
        for prop in sorted(set(props) - set(SERIALIZER_PROPERTIES[kind])):
            problems.append((f"{key}.{prop}", f"unknown property for a {kind} serializer (known: "
                             + ", ".join(SERIALIZER_PROPERTIES[kind]) + ")"
                             + did_you_mean(prop, SERIALIZER_PROPERTIES[kind])))
        if kind == "millis":
            problems += _check_pattern(f"{key}.pattern", props.get("pattern"))
        return problems


def _check_pattern(key: str, pattern: str | None) -> list[tuple[str, str]]:
    if not pattern:
        return [(key, "required property is missing (a Joda date pattern, e.g. yyyy-MM-dd HH:mm)")]
    try:
        joda.JodaPattern(pattern)
    except joda.JodaError as exc:
        return [(key, f"{exc} (got '{pattern}')")]
    return []


class PassThroughSerializer:
    """Flume's RegexExtractorInterceptorPassThroughSerializer: the group's text."""

    def serialize(self, value: str) -> str:
        return value


class MillisSerializer:
    """Flume's RegexExtractorInterceptorMillisSerializer: the group parsed by a Joda pattern, in epoch ms."""

    def __init__(self, pattern: str):
        self.format = joda.JodaPattern(pattern)

    def serialize(self, value: str) -> str:
        return str(self.format.parse_millis(value))


def build_serializer(props: dict[str, str]):
    if serializer_kind(props.get("type", "DEFAULT")) == "millis":
        return MillisSerializer(props["pattern"])
    return PassThroughSerializer()


class RegexExtractorInterceptor(Interceptor):
    Config = RegexExtractorConfig

    @classmethod
    def check(cls, config, refs: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        return config.problems()

    def __init__(self, name: str, config: RegexExtractorConfig, context: InterceptorContext):
        super().__init__(name, config, context)
        self.pattern = java_regex.compile_java(config.regex)
        # Flume's list holds one entry per listed name (a name listed twice is used twice).
        self.serializers = [(config.props_of(s)["name"], build_serializer(config.props_of(s)))
                            for s in config.serializers]
        self.failures = 0

    def intercept(self, event: Event) -> Event:
        match = self.pattern.search(event.body.decode("utf-8", "replace"))
        if match is None:
            return event
        added = {}
        for group, (header, serializer) in enumerate(self.serializers[:self.pattern.groups], start=1):
            value = match.group(group)
            if value is None:
                continue
            try:
                added[header] = serializer.serialize(value)
            except joda.JodaError as exc:
                self._failed(header, exc)
        return event._replace(headers={**event.headers, **added}) if added else event

    def _failed(self, header: str, exc: Exception) -> None:
        self.failures += 1
        # 1st, 10th, 100th...: a pattern that never fits must not flood the log.
        if str(self.failures).strip("0") == "1":
            log.warning("regex_extractor %s: header %s not set (%s); %d such failures so far",
                        self.name, header, exc, self.failures)
