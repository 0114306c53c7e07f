"""Circuit Atlas: a catalog of the circuits inside transformer models, kept in Neo4j.

The public API (:mod:`circuit_atlas.api`), importable without side effects::

    import circuit_atlas as ca
    ca.ingest_model(model, data, out)    # model -> artifact directories (no catalog needed)
    catalog = ca.open_catalog()          # a Catalog: load, query, circuit, component, ...
    ca.IngestConfig(...)                 # the ingestion settings

The import package is assembled from the repository's top-level folders: ``app/`` is
``circuit_atlas`` itself (API, CLI, loader, Neo4j connection and local server, export, demo),
``ingest/`` is ``circuit_atlas.ingest`` (model to artifact), ``reference/`` is
``circuit_atlas.reference`` (models the project trains), ``schema/`` and ``queries/`` are
``circuit_atlas.schema`` and ``circuit_atlas.queries``. Nothing heavy is imported until used.
"""

from .version import __version__

__all__ = ["Catalog", "IngestConfig", "__version__", "ingest_model", "open_catalog"]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def __getattr__(name: str):
    if name in ("Catalog", "ingest_model", "open_catalog"):
        from . import api

        return getattr(api, name)
    if name == "IngestConfig":
        from .ingest.config import IngestConfig

        return IngestConfig
    raise AttributeError(f"module 'circuit_atlas' has no attribute {name!r}")
