// name: models
// description: Every model in the catalog with its shape and how many complete checkpoints it has.
// returns: model, family, n_layers, d_model, n_heads, d_head, d_mlp, d_vocab, source, checkpoints
// params: (none)
MATCH (m:Model)
RETURN m.id AS model, m.family AS family, m.n_layers AS n_layers, m.d_model AS d_model, m.n_heads AS n_heads,
       m.d_head AS d_head, m.d_mlp AS d_mlp, m.d_vocab AS d_vocab, m.source AS source,
       COUNT { (m)-[:HAS_CHECKPOINT]->(:Checkpoint {status: 'complete'}) } AS checkpoints
ORDER BY model
