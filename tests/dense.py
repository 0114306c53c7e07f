"""Dense reference computations of the attribution pass (tests/model/test_attribution.py,
test_examples.py): every score from whole captured tensors, with none of the blocking, the stacked
layouts or the d_head shortcuts of ingest/attribution.py."""

import torch

from circuit_atlas.ingest.attribution import pull_back
from circuit_atlas.ingest.data import DataSlice
from circuit_atlas.ingest.metrics import sequence_losses
from circuit_atlas.ingest.model_adapter import site
from circuit_atlas.ingest.statistics import mlp_input_residual


def dense_scores(model, compression, moments, layout, data: DataSlice, per_token: bool = False):
    """Per sequence [b, R, W] edge sums and [b, W + 1] channel effects, and per channel the mean
    output norm over real tokens [W + 1] (the unembedding: its input), from whole tensors; with
    ``per_token``, also each token's channel effects gᵀ(y - E y) [b, p, W + 1] and the norm of each
    reader's input in its read subspace [b, p, channels with a read role] (a head by its q role, the
    basis taken into the span of the role's weights, where the role can read)."""
    spec, w = model.spec, model.weights
    L = spec.n_layers
    tokens, real = data.tokens, data.mask.float()
    grad_names = [site(r, l) for l in range(L) for r in ("q", "k", "v", "mlp_x", "attn_out", "mlp_out")]
    grad_names += [site("final_x"), site("embed")]
    value_names = [site(s, l) for l in range(L) for s in ("z", "attn_x", "resid_pre", mlp_input_residual(spec))]
    value_names += [site("pos_embed"), site("resid_final")]
    logits, acts = model.run_capturing(tokens, grad_names + value_names, attention_mask=data.mask)
    grads = dict(
        zip(
            grad_names,
            torch.autograd.grad(sequence_losses(logits, tokens, data.targets()).sum(), [acts[n] for n in grad_names]),
        )
    )
    b, p, d = acts[site("embed")].shape
    centred = torch.zeros(b, p, len(layout.writers), d)
    outputs = torch.zeros_like(centred)
    joins = torch.zeros_like(centred)
    for j, c in enumerate(layout.writers):
        if c.kind == "attn_head":
            z = acts[site("z", c.layer)][:, :, c.head]
            outputs[:, :, j] = z @ w.W_O[c.layer, c.head]
            centred[:, :, j] = (z - moments.z_mean[c.layer, c.head].float()) @ w.W_O[c.layer, c.head]
            joins[:, :, j] = grads[site("attn_out", c.layer)]
        elif c.kind == "mlp":
            outputs[:, :, j] = acts[site("mlp_out", c.layer)]
            centred[:, :, j] = outputs[:, :, j] - moments.y_mlp_mean[c.layer].float()
            joins[:, :, j] = grads[site("mlp_out", c.layer)]
        else:
            mean = moments.embed_mean if c.kind == "embed" else moments.pos_mean
            outputs[:, :, j] = acts[site(c.kind)].expand(b, p, d)
            centred[:, :, j] = outputs[:, :, j] - mean.float()
            joins[:, :, j] = grads[site("embed")]
    projected = torch.zeros(b, p, len(layout.readers), d)
    for i, r in enumerate(layout.readers):
        c, basis = r.channel, compression.basis(r.channel, r.role).float()
        if c.kind == "attn_head":
            weight = {"q": w.W_Q, "k": w.W_K, "v": w.W_V}[r.role][c.layer, c.head]
            g = grads[site(r.role, c.layer)][:, :, c.head] @ weight.T
            g = pull_back(g, acts[site("attn_x", c.layer)], acts[site("resid_pre", c.layer)], spec.normalization)
        elif c.kind == "mlp":
            g = pull_back(
                grads[site("mlp_x", c.layer)],
                acts[site("mlp_x", c.layer)],
                acts[site(mlp_input_residual(spec), c.layer)],
                spec.normalization,
            )
        else:
            g = pull_back(grads[site("final_x")], acts[site("final_x")], acts[site("resid_final")], spec.normalization)
        projected[:, :, i] = g @ basis @ basis.T
    x = acts[site("final_x")]
    effects = torch.cat(
        [
            (joins * centred).sum((1, 3)),
            (grads[site("final_x")] * (x - moments.final_mean.float())).sum((1, 2))[:, None],
        ],
        1,
    )
    norms = torch.cat([outputs.norm(dim=-1), x.norm(dim=-1)[..., None]], 2)  # [b, p, W + 1]
    mean_norm = (norms * real[..., None]).sum((0, 1)) / real.sum()
    edges = torch.einsum("bprd,bpwd->brw", projected, centred).detach()
    if not per_token:
        return edges, effects.detach(), mean_norm.detach()
    token_effects = torch.cat(
        [(joins * centred).sum(3), (grads[site("final_x")] * (x - moments.final_mean.float())).sum(2)[..., None]], 2
    )
    inputs = []
    for c in layout.channels:
        if c.kind == "attn_head":
            weight = w.W_Q[c.layer, c.head].double()
            span = weight @ torch.linalg.pinv(weight)  # the orthogonal projector onto the weights' columns
            basis = span @ compression.basis(c, "q").double()
            inputs.append((acts[site("attn_x", c.layer)].double() @ basis).norm(dim=-1))
        elif c.kind == "mlp":
            inputs.append((acts[site("mlp_x", c.layer)].double() @ compression.basis(c, "in").double()).norm(dim=-1))
        elif c.kind == "unembed":
            inputs.append((x.double() @ compression.basis(c, "in").double()).norm(dim=-1))
    return edges, effects.detach(), mean_norm.detach(), token_effects.detach(), torch.stack(inputs, 2).detach()
