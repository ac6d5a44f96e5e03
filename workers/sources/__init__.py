"""Sources, one module each; their registry is ``core.registries.SOURCES``."""
