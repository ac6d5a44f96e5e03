"""Sinks, one module each; their registry is ``core.registries.SINKS``."""
