"""The ingestion job: a model and data in, one artifact directory per checkpoint out.

Data flows one way through these modules: ``model_adapter`` (load a model) -> ``channels`` (cut
it into channels; the channel order and score indices) -> ``data`` (slices) -> ``statistics``
(moments, on a sample) -> ``compression`` (subspaces) -> ``interventions`` (channels compressed
or ablated, many variants per batch) -> ``fidelity`` (rank search, channel recovery, exact
ablation, on an evaluation sample) -> ``structural`` (weight, strength, flow) -> ``attribution``
(the per-slice pass over all the data) -> ``fingerprints`` -> ``matching`` -> ``artifact`` (the
tables' one schema), orchestrated by ``pipeline`` with the settings of ``config`` and the
checkpoints of ``checkpoints``. Nothing here imports the Neo4j driver: the catalog side
(``circuit_atlas.loader``) reads the artifacts.
"""
