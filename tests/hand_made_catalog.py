"""A hand-made catalog whose components and circuits are known, built with plain Cypher.

Checkpoints ``m@1`` and ``m@2`` are complete, ``m@3`` is still loading; each has the attention
channels A..E (layer = position), all five roles as subspaces. Only ``m@1`` has edges and slices.
"""

# Checkpoint m@1 (complete): channels A..E. Edges (writer out -> reader role) with weight/flow/attribution:
EDGES = [("A", "B", "k", 0.9, 0.5, 0.30), ("B", "C", "v", 0.8, 0.4, 0.20), ("D", "E", "q", 0.7, 0.3, 0.10),
         ("C", "D", "in", 0.05, 0.1, 0.01)]
# Ablation effect per slice (nats) and slice attribution per edge:
EFFECTS = {"rep": {"A": 1.0, "B": 0.8, "C": 0.6, "D": 0.01, "E": 0.02},
           "rnd": {"A": 0.02, "B": -0.1, "C": 0.5, "D": 0.03, "E": 0.01}}
SLICE_ATTRIBUTION = {"rep": {("A", "B"): 0.25, ("B", "C"): 0.15, ("D", "E"): 0.05, ("C", "D"): 0.001},
                     "rnd": {("A", "B"): 0.01, ("B", "C"): 0.02, ("D", "E"): 0.01, ("C", "D"): 0.001}}
FINGERPRINTS = {"A": [1.0, 0.0, 0.0], "B": [0.0, 1.0, 0.0], "C": [0.9, 0.1, 0.0], "D": [0.0, 0.0, 1.0], "E": [0.1, 0.0, 1.0]}

BUILD = """
MERGE (m:Model {id: 'm'}) SET m.name = 'm'
WITH m
UNWIND $checkpoints AS ck
CREATE (c:Checkpoint {id: ck.id, model_id: 'm', step: ck.step, status: ck.status, loss: 3.0, fidelity: 0.97,
                      rank_fraction: 0.99})
CREATE (m)-[:HAS_CHECKPOINT]->(c)
WITH c, ck
UNWIND $blocks AS blk
CREATE (b:Block:AttentionHead {id: ck.id + '/' + blk.name, checkpoint_id: ck.id, name: blk.name, kind: 'attn_head', layer: blk.layer,
                 head: 0, fidelity: 0.99, fingerprint: blk.fingerprint, induction: blk.layer * 0.1})
CREATE (c)-[:HAS_BLOCK]->(b)
FOREACH (role IN ['q', 'k', 'v', 'in', 'out'] |
  CREATE (b)-[:HAS_SUBSPACE]->(:Subspace {id: b.id + '/' + role, block_id: b.id, checkpoint_id: ck.id, role: role, rank: 2}))
"""

LINK = """
UNWIND $edges AS e
MATCH (a:Subspace {id: e.source}), (b:Subspace {id: e.target})
CREATE (a)-[:FEEDS {role: e.role, weight: e.weight, flow: e.flow, attribution: e.attribution, strength: e.weight}]->(b)
WITH a, b, e
UNWIND e.slices AS s
CREATE (a)-[:FLOWS_ON {slice: s.slice, role: e.role, attribution: s.attribution, attribution_signed: -s.attribution}]->(b)
"""

ACTIVE = """
UNWIND $rows AS r
MERGE (d:DataSlice {id: r.slice + ':h'}) SET d.name = r.slice
WITH d, r
MATCH (b:Block {id: r.block})
CREATE (b)-[:ACTIVE_ON {ablation: r.effect, attribution: abs(r.effect), mean_norm: 1.0}]->(d)
"""

MATCHES = """
UNWIND $pairs AS p
MATCH (x:Block {id: p[0]}), (y:Block {id: p[1]})
CREATE (x)-[:MATCHES {similarity: p[2], method: 'subspace'}]->(y)
"""


def build(driver, database: str) -> None:
    """Write the catalog into an empty, migrated database."""
    checkpoints = [{"id": "m@1", "step": 1, "status": "complete"}, {"id": "m@2", "step": 2, "status": "complete"},
                   {"id": "m@3", "step": 3, "status": "loading"}]
    blocks = [{"name": n, "layer": i, "fingerprint": FINGERPRINTS[n]} for i, n in enumerate("ABCDE")]
    driver.execute_query(BUILD, checkpoints=checkpoints, blocks=blocks, database_=database)
    edges = [{"source": f"m@1/{w}/out", "target": f"m@1/{r}/{role}", "role": role, "weight": wt, "flow": fl,
              "attribution": at, "slices": [{"slice": s, "attribution": SLICE_ATTRIBUTION[s][(w, r)]} for s in EFFECTS]}
             for w, r, role, wt, fl, at in EDGES]
    driver.execute_query(LINK, edges=edges, database_=database)
    rows = [{"block": f"m@1/{b}", "slice": s, "effect": e} for s, effects in EFFECTS.items() for b, e in effects.items()]
    driver.execute_query(ACTIVE, rows=rows, database_=database)
    driver.execute_query(MATCHES, pairs=[["m@1/A", "m@2/A", 0.9], ["m@2/A", "m@3/A", 0.8]], database_=database)
