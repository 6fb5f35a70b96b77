"""mmp: declarative ML pipelines for tabular data."""

__version__ = "0.1.0"
