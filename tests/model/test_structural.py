"""The structural edge scores from their definitions, computed here from the stored bases and
importances and from writer outputs captured on the data the moments came from: a LayerNorm GPT-2
and an RMSNorm Llama, with MLP writers and readers (the planted model's MLPs are zero).

    strength = ||diag(t_B) C_Bᵀ U_A diag(s_A)||_F,   weight = strength / (||s_A|| ||t_B||),
    flow = E||C_Bᵀ y_A||² / Σ_A' E||C_Bᵀ y_A'||²  (the writers A' that feed B; token-uniform)
"""

import pytest
import torch
from builders import random_gpt2, random_llama

from circuit_atlas.ingest.channels import ChannelLayout
from circuit_atlas.ingest.compression import Compression, decompose
from circuit_atlas.ingest.data import DataSlice
from circuit_atlas.ingest.model_adapter import load_model, site
from circuit_atlas.ingest.statistics import accumulate_moments
from circuit_atlas.ingest.structural import structural_scores


@pytest.fixture(params=["gpt2", "llama"])
def scored(request, tmp_path):
    build = random_gpt2 if request.param == "gpt2" else random_llama
    model = load_model(str(build(tmp_path / "m", seed=5)))
    tokens = torch.randint(0, model.spec.d_vocab, (12, 10), generator=torch.Generator().manual_seed(6))
    data = DataSlice.of_tokens("fit", "fit", tokens)
    moments = accumulate_moments(model, [data], progress=False)
    compression = Compression(decompose(moments, model.weights), 0.8, None, 1e-3)
    layout = ChannelLayout(model.spec)
    return model, layout, compression, structural_scores(compression, moments, layout, model.weights.W_O), tokens


def writer_outputs(model, layout, tokens) -> torch.Tensor:
    """Every writer's output at every token [tokens, writers, d], float64."""
    names = [site(s, l) for l in range(model.spec.n_layers) for s in ("z", "mlp_out")]
    names += [site("embed"), site("pos_embed")]
    with torch.no_grad():
        _, acts = model.run_capturing(tokens, names)
    outputs = []
    for c in layout.writers:
        if c.kind == "attn_head":
            y = acts[site("z", c.layer)][:, :, c.head] @ model.weights.W_O[c.layer, c.head]
        elif c.kind == "mlp":
            y = acts[site("mlp_out", c.layer)]
        else:
            y = acts[site(c.kind)].expand(*tokens.shape, -1)
        outputs.append(y.detach().reshape(-1, y.shape[-1]).double())
    return torch.stack(outputs, 1)


def test_weight_strength_and_flow_are_their_definitions(scored):
    model, layout, compression, structural, tokens = scored
    outputs = writer_outputs(model, layout, tokens)
    kinds = set()
    for i, reader in enumerate(layout.readers):
        C = compression.basis(reader.channel, reader.role).double()
        t = compression.singular_values(reader.channel, reader.role)[: C.shape[1]].double()
        feeding = [j for j in range(len(layout.writers)) if layout.feeds_mask[i, j]]
        energies = {j: (outputs[:, j] @ C).square().sum(-1).mean() for j in feeding}
        total = sum(energies.values())
        for j in feeding:
            writer = layout.writers[j]
            U = compression.basis(writer, "out").double()
            s = compression.singular_values(writer, "out")[: U.shape[1]].double()
            strength = (torch.diag(t) @ C.T @ U @ torch.diag(s)).norm()
            weight = strength / (s.norm() * t.norm()) if s.norm() * t.norm() > 0 else torch.tensor(0.0)
            flow = energies[j] / total if total > 0 else torch.tensor(0.0)
            where = f"{writer.name} -> {reader.key}"
            assert float(structural.strength[i, j]) == pytest.approx(float(strength), rel=1e-4, abs=1e-6), where
            assert float(structural.weight[i, j]) == pytest.approx(float(weight), rel=1e-4, abs=1e-6), where
            assert float(structural.flow[i, j]) == pytest.approx(float(flow), rel=1e-3, abs=1e-5), where
            kinds.add((writer.kind, reader.channel.kind))
        for j in set(range(len(layout.writers))) - set(feeding):
            assert structural.strength[i, j] == structural.weight[i, j] == structural.flow[i, j] == 0
    assert {("mlp", "attn_head"), ("attn_head", "mlp"), ("mlp", "unembed"), ("embed", "mlp")} <= kinds
    assert structural.flow.max() > 0.2 and structural.strength.max() > 0
