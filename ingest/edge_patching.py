"""Edge patching: the exact effect of one edge, its writer ablated in the input of one read role only.

For a writer A (output y_A) and a read role r of a later reader B, the *patched* run is the clean
run in which only B's role r reads the residual stream with A's output replaced by its baseline
b_A (the slice's :class:`~.baselines.Baseline`, as in exact ablation):

    x_B,r = norm(r_B - y_A + b_A)

while every other reader (and B's other roles) reads the clean stream, and everything after B is
recomputed: path patching of one edge, the verification step of AtP*. With L the slice's metric
(:mod:`.metrics`, a loss), the edge's ``patched`` effect is the mean over the slice's held-out
sample of L(patched) - L(clean): positive where the edge helps, in nats like a channel's
``ablation``. A head's output is z_h W_O[h] (the shared output bias is no head's), an MLP's its
``mlp_out``, an embedding's its own; a head role's input is mapped by that role's weights of that
head alone, so its other heads and roles are untouched.

The sample's prompts are repeated along the batch, one copy per edge (as
:func:`.fidelity.variant_losses` runs variants), and each hook patches only its own edge's rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .baselines import Baseline
from .channels import Channel, ChannelLayout, ReadRole
from .data import DataSlice
from .metrics import sequence_losses
from .model_adapter import Hook, LoadedModel, site
from .statistics import mlp_input_residual
from .transformer import normalize

#: An edge: the writer, and the reader role it is patched in.
Edge = tuple[Channel, ReadRole]


def candidate_edges(layout: ChannelLayout, scores: Sequence[Tensor], count: int) -> list[tuple[int, int]]:
    """The (reader row, writer column) pairs to patch: every feeding pair when there are at most
    ``count``, else the union of each score matrix's ``count`` largest (ties in row, column order),
    in row, column order."""
    mask = layout.feeds_mask
    pairs = mask.nonzero().tolist()  # row-major: the order in which boolean indexing reads the mask
    if len(pairs) <= count:
        return [tuple(p) for p in pairs]
    chosen: set[tuple[int, int]] = set()
    for score in scores:
        values = score.cpu()[mask].double()
        order = torch.sort(-values, stable=True).indices[:count]
        chosen.update(tuple(pairs[k]) for k in order.tolist())
    return sorted(chosen)


def edge_losses(
    model: LoadedModel,
    layout: ChannelLayout,
    edges: Sequence[Edge],
    data: DataSlice,
    baseline: Baseline,
    batch_tokens: int,
    progress: bool = False,
) -> Tensor:
    """The metric of every prompt of ``data`` with each edge patched, and clean last: [E + 1, n]."""
    n, width = data.n_sequences, data.tokens.shape[1]
    variants: list[Edge | None] = [*edges, None]
    total = len(variants) * n
    rows = max(1, batch_tokens // width)
    losses = torch.empty(total, dtype=torch.float64)
    desc = f"edge patching {data.name} ({len(edges)} edges)"
    bar = tqdm(total=total, desc=desc, unit="prompt", disable=not progress, leave=False)
    with torch.no_grad():
        for start in range(0, total, rows):
            index = torch.arange(start, min(start + rows, total))
            batch = data.rows(index % n)
            hooks = _patching_hooks(model, layout, [variants[v] for v in (index // n).tolist()], baseline, index % n)
            logits = model.run(batch.tokens, hooks, batch.mask)
            losses[index] = sequence_losses(logits, batch.tokens, batch.targets()).double().cpu()
            bar.update(len(index))
    bar.close()
    return losses.view(len(variants), n)


def patched_effects(
    model: LoadedModel,
    layout: ChannelLayout,
    pairs: Sequence[tuple[int, int]],
    data: DataSlice,
    baseline: Baseline,
    batch_tokens: int,
    progress: bool = False,
) -> Tensor:
    """[reader role, writer] float64: each pair's patched effect on ``data`` (the mean over its prompts
    of L(patched) - L(clean)), NaN for the pairs not patched."""
    matrix = torch.full((len(layout.readers), len(layout.writers)), float("nan"), dtype=torch.float64)
    if not pairs:
        return matrix
    edges = [(layout.writers[j], layout.readers[i]) for i, j in pairs]
    losses = edge_losses(model, layout, edges, data, baseline, batch_tokens, progress)
    for (i, j), effect in zip(pairs, (losses[:-1] - losses[-1]).mean(1).tolist()):
        matrix[i, j] = effect
    return matrix


def _patching_hooks(
    model: LoadedModel, layout: ChannelLayout, row_edges: list[Edge | None], baseline: Baseline, prompts: Tensor
) -> list[tuple[str, Hook]]:
    """Hooks that patch, in row i of a batch, the edge ``row_edges[i]`` (None: the clean run).

    Writer hooks leave the stream alone and record each patched row's change b_A - y_A [p, d]
    (rows of one [B, p, d] tensor); a reader's residual is recorded where its normalisation reads
    it, and the reader role's input is recomputed from the residual plus that change.
    """
    spec, device = model.spec, model.device
    rows_of_writer: dict[str, list[int]] = defaultdict(list)
    rows_of_reader: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, edge in enumerate(row_edges):
        if edge is not None:
            rows_of_writer[edge[0].name].append(i)
            rows_of_reader[(edge[1].channel.name, edge[1].role)].append(i)
    state: dict[str, Tensor] = {}  # "change": b_A - y_A per batch row [B, p, d]; residuals by site
    hooks: list[tuple[str, Hook]] = []

    def record_writer(channel: Channel, rows: list[int]) -> Hook:
        index = torch.tensor(rows, device=device)

        def hook(activation: Tensor, hook) -> None:
            own = activation.expand(len(row_edges), *activation.shape[1:])[index]
            delta = _writer_change(model, channel, own, baseline.values(hook.name, prompts[rows], own.shape[1]))
            if "change" not in state:
                state["change"] = delta.new_zeros(len(row_edges), *delta.shape[1:])
            state["change"][index] = delta

        return hook

    def record_residual(name: str) -> Hook:
        def hook(activation: Tensor, hook) -> None:
            state[name] = activation

        return hook

    def patch(reader: ReadRole, residual_site: str, rows: list[int]) -> Hook:
        index = torch.tensor(rows, device=device)

        def hook(activation: Tensor, hook) -> Tensor:
            residual = state[residual_site][index] + state["change"][index]
            return _reading(model, reader, residual, activation, index)

        return hook

    for name, rows in rows_of_writer.items():
        channel = layout.by_name[name]
        hooks.append((_writer_site(channel), record_writer(channel, rows)))
    recorded: set[str] = set()
    for (name, role), rows in rows_of_reader.items():
        reader = ReadRole(layout.by_name[name], role)
        residual_site, reader_hook = _reader_sites(spec, reader)
        if residual_site not in recorded:
            recorded.add(residual_site)
            hooks.append((residual_site, record_residual(residual_site)))
        hooks.append((reader_hook, patch(reader, residual_site, rows)))
    return hooks


def _writer_site(channel: Channel) -> str:
    """Where a writer's output is read: a head's z (all heads), an MLP's output, an embedding."""
    return site(
        *{"attn_head": ("z", channel.layer), "mlp": ("mlp_out", channel.layer)}.get(channel.kind, (channel.kind, None))
    )


def _reader_sites(spec, reader: ReadRole) -> tuple[str, str]:
    """The residual a reader role normalises, and the site of its input (a head's role: its q, k or v)."""
    channel = reader.channel
    if channel.kind == "attn_head":
        return site("resid_pre", channel.layer), site(reader.role, channel.layer)
    if channel.kind == "mlp":
        return site(mlp_input_residual(spec), channel.layer), site("mlp_x", channel.layer)
    return site("resid_final"), site("final_x")


def _reading(
    model: LoadedModel, reader: ReadRole, residual: Tensor, activation: Tensor, rows: Tensor | None = None
) -> Tensor:
    """The reader role's input site ``activation`` with what the role reads of ``residual`` in
    ``rows`` (None: all): the residual normalised (the unembedding: by the final norm), for a head's
    role through that head's own weights and bias of the role."""
    cfg, params, channel = model.runner.cfg, model.runner.params, reader.channel
    final = channel.kind == "unembed"
    x = normalize(residual, cfg.final_normalization if final else cfg.normalization, cfg.eps)
    if channel.kind != "attn_head" and rows is None:
        return x.to(activation.dtype)
    out = activation.clone()
    at = slice(None) if rows is None else rows
    if channel.kind != "attn_head":
        out[at] = x.to(out.dtype)
        return out
    l, h, role = channel.layer, channel.head, reader.role.upper()
    out[at, :, h] = (x @ params[f"blocks.{l}.attn.W_{role}"][h] + params[f"blocks.{l}.attn.b_{role}"][h]).to(out.dtype)
    return out


def _writer_change(model: LoadedModel, channel: Channel, own: Tensor, base: Tensor) -> Tensor:
    """b_A - y_A [B, p, d] from the writer's activation ``own`` and its baseline ``base`` (broadcastable)."""
    base = base.expand_as(own)
    if channel.kind == "attn_head":
        W_O = model.runner.params[f"blocks.{channel.layer}.attn.W_O"][channel.head]
        return (base[:, :, channel.head] - own[:, :, channel.head]) @ W_O
    return base - own


def ablated_edge_losses(
    model: LoadedModel,
    layout: ChannelLayout,
    ablated: Collection[Edge],
    data: DataSlice,
    baseline: Baseline,
    batch_tokens: int,
) -> Tensor:
    """The metric of every prompt of ``data`` [n] with every edge of ``ablated`` patched at once: each
    reader role reads ``norm(r + Σ_A (b_A - y_A))`` over the writers A of its ablated edges, where y_A
    is A's output in this same run (computed from its own patched inputs) and b_A its baseline."""
    rows = max(1, batch_tokens // data.tokens.shape[1])
    losses = []
    with torch.no_grad():
        for start in range(0, data.n_sequences, rows):
            prompts = torch.arange(start, min(start + rows, data.n_sequences))
            batch = data.rows(prompts)
            logits = model.run(batch.tokens, ablated_edge_hooks(model, layout, ablated, baseline, prompts), batch.mask)
            losses.append(sequence_losses(logits, batch.tokens, batch.targets()).double().cpu())
    return torch.cat(losses)


def ablated_edge_hooks(
    model: LoadedModel, layout: ChannelLayout, ablated: Collection[Edge], baseline: Baseline, prompts: Tensor
) -> list[tuple[str, Hook]]:
    """Hooks that patch every edge of ``ablated`` in every row of a batch (prompts: their indices in
    the baseline's slice).

    Every writer adds its change b_A - y_A to a running total; where a residual is normalised by a
    reader, the total so far is the sum over exactly the writers in that residual, so a reader role
    with ablated edges reads ``norm(r + total - Σ_K (b_A - y_A))`` over the writers K it keeps: one
    tensor per residual, and one per writer that some patched reader keeps.
    """
    spec = model.spec
    ablated_of: dict[ReadRole, set[str]] = defaultdict(set)
    for writer, reader in ablated:
        ablated_of[reader].add(writer.name)
    mask = layout.feeds_mask
    kept_of = {
        reader: [w for j, w in enumerate(layout.writers) if mask[i, j] and w.name not in ablated_of[reader]]
        for i, reader in enumerate(layout.readers)
        if reader in ablated_of
    }
    needed = {w.name for kept in kept_of.values() for w in kept}
    state: dict[str, Tensor] = {}  # "total"; each residual site's total and activation; kept writers' changes

    def record_writer(channel: Channel) -> Hook:
        def hook(activation: Tensor, hook) -> None:
            change = _writer_change(
                model, channel, activation, baseline.values(hook.name, prompts, activation.shape[1])
            )
            state["total"] = state["total"] + change if "total" in state else change
            if channel.name in needed:
                state[channel.name] = change

        return hook

    def record_residual(name: str) -> Hook:
        def hook(activation: Tensor, hook) -> None:
            state[name] = activation
            state[f"{name}/total"] = state["total"]

        return hook

    def patch(reader: ReadRole, residual_site: str) -> Hook:
        def hook(activation: Tensor, hook) -> Tensor:
            change = state[f"{residual_site}/total"]
            for writer in kept_of[reader]:
                change = change - state[writer.name]
            return _reading(model, reader, state[residual_site] + change, activation)

        return hook

    hooks = [(_writer_site(w), record_writer(w)) for w in layout.writers]
    recorded: set[str] = set()
    for reader in kept_of:
        residual_site, reader_site = _reader_sites(spec, reader)
        if residual_site not in recorded:
            recorded.add(residual_site)
            hooks.append((residual_site, record_residual(residual_site)))
        hooks.append((reader_site, patch(reader, residual_site)))
    return hooks
