# %% [markdown]
# # Circuit Atlas from a notebook
#
# Ingest the project's reference model (a 2-layer induction model trained here, no model hub),
# load it into the catalog, and pull its induction circuit as a DataFrame and as a graph.
# Each `# %%` block is a notebook cell (Jupyter, VS Code and PyCharm open this file as a notebook
# with jupytext, or run it as a script). It needs a running catalog: `circuit-atlas neo4j start`
# (or `NEO4J_URI` and `NEO4J_PASSWORD` pointing at a server).

# %%
import matplotlib.pyplot as plt
import networkx as nx

import circuit_atlas as ca
from circuit_atlas.reference import default_reference_dir
from circuit_atlas.reference.induction import InductionRecipe, train_induction

checkpoints = train_induction(InductionRecipe(), default_reference_dir())  # cached after the first run
final = checkpoints[-1]

# %%
catalog = ca.open_catalog()  # NEO4J_URI, else the local server of ~/.circuit-atlas/neo4j
catalog.migrate()
catalog.ingest(final, data=["repeated", "random"], out="artifacts", name="induction-notebook", progress=False)
catalog.checkpoints("induction-notebook")

# %% The circuit on repeated sequences, as a table: one row per edge between circuit channels
checkpoint = catalog.checkpoints("induction-notebook")["checkpoint"].iloc[-1]
table = catalog.query("circuit", checkpoint=checkpoint, slice="repeated", min_effect=0.1, min_attribution=0.02)
table

# %% ... and as a networkx graph: nodes carry kind, layer, head and ablation effect; edges roles and attribution
graph = catalog.circuit(checkpoint, "repeated").to_networkx()
print(sorted(graph.nodes, key=lambda n: graph.nodes[n]["order"]))
print([(w, r, d["roles"], round(d["attribution"], 3)) for w, r, d in graph.edges(data=True)])

# %% The component of an induction head on repeated sequences: the circuit's channels (exact ablation
# effect of at least 0.1 nats) joined by edges with at least a fifth of the largest attribution there
component = catalog.component(checkpoint, "L1H0", slice_name="repeated", min_share=0.2, min_effect=0.1)
print(sorted(component.nodes, key=lambda n: component.nodes[n]["order"]))

# %% Draw it left to right in channel order
position = {n: (graph.nodes[n]["order"], -(graph.nodes[n]["head"] or 0)) for n in graph.nodes}
figure, axes = plt.subplots(figsize=(8, 3))
widths = [
    1 + 6 * d["attribution"] / max(d["attribution"] for *_, d in graph.edges(data=True))
    for *_, d in graph.edges(data=True)
]
nx.draw_networkx(graph, position, ax=axes, node_color="#4C8EDA", node_size=900, font_size=8, width=widths)
axes.set_axis_off()
figure.savefig("induction-circuit.png", dpi=120)
catalog.close()
