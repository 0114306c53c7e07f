"""The ingestion job: a model and data in, one artifact directory per checkpoint out.

Data flows one way through these modules: ``model_adapter`` (load a model) -> ``channels`` (cut
it into channels; the channel order and score indices) -> ``data`` (slices) -> ``statistics``
(moments) -> ``compression`` (subspaces) -> ``fidelity`` (ranks, per-channel fidelity, exact
ablation) -> ``edges`` (structural and attribution scores) -> ``fingerprints`` -> ``matching``
-> ``artifact`` (the tables' one schema), orchestrated by ``pipeline``. Nothing here imports the
Neo4j driver: the catalog side (``circuit_atlas.loader``) reads the artifacts.
"""
