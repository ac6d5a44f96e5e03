"""Interceptors, one module each (Flume's interceptor chain); their registry is ``core.registries.INTERCEPTORS``.

Flume resolves interceptor aliases case-insensitively (``InterceptorType.valueOf(type.toUpperCase())``), as the
registry does.  ``uuid`` is Flumery's alias for the morphline module's UUIDInterceptor, which Flume names only by
class.
"""
