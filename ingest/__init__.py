"""Circuit Atlas: a catalog of the circuits inside transformer models, kept in Neo4j.

The import package is assembled from the repository's top-level folders: ``ingest/`` is
``circuit_atlas`` itself (the ingestion job and the CLI), ``schema/`` is
``circuit_atlas.schema`` (migrations) and ``queries/`` is ``circuit_atlas.queries`` (the Cypher
library). Nothing happens at import time.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("circuit-atlas")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
