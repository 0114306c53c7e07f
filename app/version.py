"""The installed package's version: what ``--version`` prints and an artifact records as its
``code_version`` (``0+unknown`` from a source tree that was never installed)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("circuit-atlas")
except PackageNotFoundError:
    __version__ = "0+unknown"
