"""Sink processors (Flume's sink groups), one module each; their registry is ``core.registries.PROCESSORS``."""
