"""The version of the jobfleet package (read by client/pyproject.toml)."""

__version__ = "0.1.0"
