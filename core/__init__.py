"""Flumery's bottom layer: what every other package builds on, importing nothing else of Flumery.

Events and batches (:mod:`core.event`), the error hierarchy (:mod:`core.errors`), Flume's configuration grammar
and its validation (:mod:`core.properties`, :mod:`core.options`, :mod:`core.config`), the component registries
(:mod:`core.registry`, :mod:`core.registries`), process settings (:mod:`core.settings`), Redis key names
(:mod:`core.keys`), counter names (:mod:`core.counters`), durable file helpers (:mod:`core.files`), and the
translators of Java regular expressions and Joda date patterns (:mod:`core.java_regex`, :mod:`core.joda`).
"""
