"""Interventions on a channel's stored subspaces, and the behaviour they cause on a slice.

A channel's subspace ``<channel>/<role>`` (B, d_model x k, orthonormal, from the artifact's bases)
gives coordinates ``c = v B`` to a vector v of the residual stream, per position: for the write
subspace (``out``) v is what the channel writes (a head's ``z_h W_O[h]``, an MLP's output, an
embedding), and Δ is added to the stream where that write enters it; for a read subspace (a head's
``q``, ``k`` or ``v``, an MLP's or the unembedding's ``in``) v is what the channel reads (the
normalised stream at its input), and Δ changes that reader's input only (for a head's role, only
that head's queries, keys or values: ``Δ W_Q[h]`` is added to them). At every real position of every
prompt:

==============================  ===============================================================
spec                            Δ
==============================  ===============================================================
``L1H2/out[0] += 3``            ``3 σ_0 b_0`` (σ_i: the standard deviation of c_i over the
                                slice's real tokens; ``-=`` subtracts; ``3 raw``: ``3 b_0``)
``L1H2/k[0] = -1.5``            ``(μ_0 - 1.5 σ_0 - c_0) b_0``: the coordinate set to its mean
                                plus -1.5 standard deviations (``raw``: set to -1.5)
``project L1H2/out[0,2]``       ``-c_S B_Sᵀ`` over the named directions S (none named: all)
``patch L1H2/out from random``  ``(c' - c) Bᵀ``: every coordinate taken from prompt π(i) of slice
                                ``random`` at the same position (π drawn with the seed; a
                                position the source prompt lacks keeps its own)
``ablate L1H2``                 the channel's write replaced by its mean over the slice's prompts at
                                each position (the catalog's default ``position`` ablation)
==============================  ===============================================================

:func:`steer` measures every intervention against the clean model on the same prompts, as batched
variants (the clean rows and one block of rows per intervention in each forward pass, as the
ingest's ablations run): per slice, the mean change of the slice's metric with its standard error
over prompts, the change of answer accuracy (task slices), the mean KL divergence from the clean
prediction at the scored positions, and the output tokens whose probability it raises and lowers
most on average there (probability, not log-probability: a flatter prediction raises the
log-probability of nearly every token, while the changes of probability sum to zero).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from circuit_atlas.errors import UserError

from .channels import Channel, model_channels
from .data import DataSlice
from .metrics import POSITIONAL, Targets, sequence_losses
from .model_adapter import Hook, LoadedModel, site

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SUBSPACE = r"(?P<channel>[^\s/\[\]]+)/(?P<role>\w+)"
SPECS = {
    "add": re.compile(rf"^{_SUBSPACE}\[(?P<index>\d+)\]\s*(?P<op>\+=|-=)\s*(?P<amount>{_NUMBER})\s*(?P<unit>sd|raw)?$"),
    "set": re.compile(rf"^{_SUBSPACE}\[(?P<index>\d+)\]\s*=\s*(?P<amount>{_NUMBER})\s*(?P<unit>sd|raw)?$"),
    "project": re.compile(rf"^project\s+{_SUBSPACE}(?:\[(?P<indices>\d+(?:\s*,\s*\d+)*)\])?$"),
    "patch": re.compile(rf"^patch\s+{_SUBSPACE}\s+from\s+(?P<source>\S+)$"),
    "ablate": re.compile(r"^ablate\s+(?P<channel>\S+)$"),
}
GRAMMAR = (
    "CH/ROLE[i] += X | CH/ROLE[i] -= X | CH/ROLE[i] = X (X in standard deviations, or 'X raw') | "
    "project CH/ROLE[i,j,...] | patch CH/ROLE from SLICE | ablate CH (ROLE: out, or a read role q, k, v, in)"
)


@dataclass(frozen=True)
class Intervention:
    """One parsed spec (see the module docstring): ``directions`` index the channel's subspace of
    ``role`` (empty: all of it), ``amount`` is in standard deviations unless ``raw``. ``basis``
    replaces the stored subspace by any orthonormal directions [d_model, k] (the API only: e.g. a
    direction outside the stored subspace)."""

    spec: str
    action: str  # add | set | project | patch | ablate
    channel: str
    role: str = "out"
    directions: tuple[int, ...] = ()
    amount: float = 0.0
    raw: bool = False
    source: str | None = None
    basis: Tensor | None = field(default=None, compare=False)


def parse(spec: str, bases: dict[str, Tensor], channels: Sequence[Channel], slices: Sequence[str]) -> Intervention:
    """``spec`` checked against the channels, their stored subspaces and the slice names;
    :class:`UserError` naming what exists when it does not fit."""
    text = " ".join(spec.split())
    matched = [(action, found) for action, pattern in SPECS.items() if (found := pattern.match(text))]
    if not matched:
        raise UserError(f"Cannot read the intervention {spec!r}; write one of: {GRAMMAR}.")
    action, found = matched[0]
    groups = found.groupdict()
    by_name = {c.name: c for c in channels}
    if action == "ablate":
        writers = [c.name for c in channels if c.writes]
        if groups["channel"] not in writers:
            raise UserError(
                f"Intervention {spec!r}: no channel {groups['channel']!r} to ablate; the writers are "
                f"{', '.join(writers)}."
            )
        return Intervention(text, action, groups["channel"])
    if groups["channel"] not in by_name:
        raise UserError(
            f"Intervention {spec!r}: no channel {groups['channel']!r}; the channels are {', '.join(by_name)}."
        )
    channel, role = by_name[groups["channel"]], groups["role"]
    if role not in channel.roles:
        raise UserError(
            f"Intervention {spec!r}: {channel.name} has no subspace {role!r}; its subspaces are "
            f"{', '.join(channel.name + '/' + r for r in channel.roles)}."
        )
    rank = bases[f"{channel.name}/{role}"].shape[1]
    indices = tuple(int(i) for i in re.findall(r"\d+", groups.get("indices") or groups.get("index") or ""))
    if rank == 0:
        raise UserError(
            f"Intervention {spec!r}: {channel.name}/{role} has rank 0 at this checkpoint; nothing to steer."
        )
    past = [i for i in indices if i >= rank]
    if past:
        raise UserError(
            f"Intervention {spec!r}: {channel.name}/{role} has rank {rank} (directions 0 to {rank - 1}); "
            f"{past[0]} is past it."
        )
    if action == "patch" and groups["source"] not in slices:
        raise UserError(f"Intervention {spec!r}: no slice {groups['source']!r}; the slices are {', '.join(slices)}.")
    sign = -1.0 if groups.get("op") == "-=" else 1.0
    return Intervention(
        text,
        action,
        channel.name,
        role,
        indices,
        sign * float(groups.get("amount") or 0.0),
        groups.get("unit") == "raw",
        groups.get("source"),
    )


@dataclass(frozen=True)
class Effect:
    """What one intervention did on one slice, against the clean model on the same prompts."""

    spec: str
    action: str
    channel: str
    slice: str
    loss_delta: float  # mean over prompts of metric(intervened) - metric(clean)
    loss_se: float  # its standard error over prompts
    accuracy_delta: float | None  # answer accuracy change (task slices; None otherwise)
    kl: float  # mean KL(clean || intervened) at the scored positions
    flipped: float  # share of the scored positions whose most likely token changes
    promoted: list[tuple[int, str | None, float]]  # (token, text, mean change of its probability)
    suppressed: list[tuple[int, str | None, float]]


class _Site:
    """Where one of a channel's subspaces meets the stream: the site whose activation gives the vector
    v that the subspace's coordinates are taken of (``capture``), the site Δ is applied at
    (``apply``), v from the captured activation, and how Δ enters the applied one."""

    def __init__(self, model: LoadedModel, channel: Channel, role: str):
        self.channel, self.role = channel, role
        self.W: Tensor | None = None  # a head's map from v to the applied activation ([d_model, d_head] or the reverse)
        l, head = channel.layer, channel.kind == "attn_head"
        if role == "out" and head:
            self.capture, self.apply = site("z", l), site("attn_out", l)
            self.W = model.weights.W_O[l, channel.head].to(model.device)  # [d_head, d_model]
        elif role == "out":
            name = {"mlp": "mlp_out", "embed": "embed", "pos_embed": "pos_embed"}[channel.kind]
            self.capture = self.apply = site(name, l if channel.kind == "mlp" else None)
        elif head:  # a head's q, k or v: its input, changed for its own queries, keys or values
            self.capture, self.apply = site("attn_x", l), site(role, l)
            self.W = getattr(model.weights, f"W_{role.upper()}")[l, channel.head].to(model.device)  # [d_model, d_head]
        else:  # the MLP's or the unembedding's input, read by nothing else
            self.capture = self.apply = site("mlp_x", l) if channel.kind == "mlp" else site("final_x")

    def vector(self, activation: Tensor) -> Tensor:
        """v ``[rows, pos, d_model]`` from the captured activation."""
        if self.role == "out" and self.W is not None:
            return activation[:, :, self.channel.head].float() @ self.W
        return activation.float()

    def add(self, activation: Tensor, rows: slice, delta: Tensor) -> Tensor:
        """The applied activation with Δ [rows, pos, d_model] entering it in ``rows``, in place (on a copy
        where it is a broadcast view such as the position embedding's)."""
        out = _writable(activation)
        if self.role != "out" and self.W is not None:
            out[rows, :, self.channel.head] += (delta @ self.W).to(out.dtype)
        else:
            out[rows] += delta.to(out.dtype)
        return out

    def ablated(self, activation: Tensor, mean: Tensor, rows: slice) -> Tensor:
        """``activation`` with the channel's write replaced by ``mean`` (per position) in ``rows``."""
        out = _writable(activation)
        width = activation.shape[1]
        if self.channel.kind == "attn_head":
            out[rows, :, self.channel.head] = mean[:width].to(out.dtype)
        else:
            out[rows] = mean[:width].to(out.dtype)
        return out


@dataclass
class _Prepared:
    """An intervention with what it needs from clean passes: its site, basis, the coordinates'
    mean and standard deviation (add, set), the per-position mean (ablate), the source coordinates
    and each prompt's source prompt (patch)."""

    intervention: Intervention
    write: _Site
    basis: Tensor  # [d_model, k], the directions acted on
    mean: Tensor | None = None  # [k]
    sd: Tensor | None = None  # [k]
    position_mean: Tensor | None = None  # [p, ...] of the captured activation's channel part
    source: Tensor | None = None  # [n_source, p_source, k] coordinates
    order: Tensor | None = None  # [n]: prompt i takes source prompt order[i]


def resample_order(n_target: int, n_source: int, seed: int) -> Tensor:
    """π: for each of ``n_target`` prompts, the source prompt it is patched from (uniform, seeded)."""
    return torch.randint(0, n_source, (n_target,), generator=torch.Generator().manual_seed(seed))


def steer(
    model: LoadedModel,
    bases: dict[str, Tensor],
    interventions: Sequence[Intervention],
    data: Sequence[DataSlice],
    sources: dict[str, DataSlice],
    batch_tokens: int = 4096,
    seed: int = 0,
    top: int = 5,
) -> list[Effect]:
    """Every intervention's :class:`Effect` on every slice of ``data`` (interventions by slice);
    ``sources`` holds the slices ``patch`` reads from (by name)."""
    prepare = _preparer(model, bases, interventions, sources, batch_tokens, seed)
    return [effect for part in data for effect in _measure(model, prepare(part), part, batch_tokens, top)]


def direction_steering(
    model: LoadedModel,
    bases: dict[str, Tensor],
    data: Sequence[DataSlice],
    tokens: int,
    push: float,
    batch_tokens: int = 4096,
    seed: int = 0,
) -> list[dict]:
    """What pushing each direction i of every write subspace does: ``<channel>/out[i] += push`` and
    ``-= push`` (standard deviations of the coordinate on the slice) measured on the first prompts of
    each slice of ``data`` that hold at most ``tokens`` tokens (at least 2 prompts, for a standard
    error). One row per (slice, channel, direction, push), in the columns of the artifact's
    ``steering`` table; a rank-0 subspace has none."""
    interventions = [
        Intervention(
            f"{key[:-4]}/out[{i}] {'+=' if sign > 0 else '-='} {push:g}", "add", key[:-4], "out", (i,), sign * push
        )
        for key, basis in bases.items()
        if key.endswith("/out")
        for i in range(basis.shape[1])
        for sign in (1.0, -1.0)
    ]
    parts = [part.rows(slice(0, min(part.n_sequences, max(2, tokens // part.tokens.shape[1])))) for part in data]
    effects = steer(model, bases, interventions, parts, {}, batch_tokens, seed, top=0)
    by_spec = {i.spec: i for i in interventions}
    return [
        {
            "slice": e.slice,
            "block": e.channel,
            "direction": by_spec[e.spec].directions[0],
            "push": by_spec[e.spec].amount,
            "loss_delta": e.loss_delta,
            "loss_se": e.loss_se,
            "accuracy_delta": e.accuracy_delta,
            "kl": e.kl,
            "flipped": e.flipped,
        }
        for e in effects
    ]


def continuations(
    model: LoadedModel,
    bases: dict[str, Tensor],
    interventions: Sequence[Intervention],
    prompt: Tensor,
    n_tokens: int,
    data: DataSlice,
    sources: dict[str, DataSlice],
    batch_tokens: int = 4096,
    seed: int = 0,
) -> list[Tensor]:
    """``prompt`` [p] continued by ``n_tokens`` tokens sampled clean and under each intervention, in
    that order, each from its own generator seeded with ``seed`` (so rows differ only where the
    intervention changes the prediction); the standard deviations, position means and patch order come
    from ``data``."""
    prepared = _preparer(model, bases, interventions, sources, batch_tokens, seed)(data)
    length = prompt.shape[0] + n_tokens
    if length > model.spec.n_ctx:
        raise UserError(
            f"A prompt of {prompt.shape[0]} tokens and {n_tokens} more exceed the context of {model.spec.n_ctx}."
        )
    if any(p.intervention.action == "ablate" for p in prepared) and length > data.tokens.shape[1]:
        raise UserError(
            f"An ablation takes each position's mean over slice {data.name!r}, whose prompts have "
            f"{data.tokens.shape[1]} positions; generate at most {data.tokens.shape[1] - prompt.shape[0]} tokens."
        )
    generators = [torch.Generator().manual_seed(seed) for _ in range(len(prepared) + 1)]
    tokens = prompt.view(1, -1).repeat(len(prepared) + 1, 1)
    with torch.no_grad():
        for _ in range(n_tokens):
            logits = model.run(tokens, _hooks(prepared, 1, torch.zeros(1, dtype=torch.long)))[:, -1]
            probabilities = logits.float().softmax(-1).cpu()
            drawn = [torch.multinomial(row, 1, generator=g) for row, g in zip(probabilities, generators)]
            tokens = torch.cat([tokens, torch.stack(drawn).to(tokens.device)], 1)
    return list(tokens.cpu())


def _preparer(
    model: LoadedModel,
    bases: dict[str, Tensor],
    interventions: Sequence[Intervention],
    sources: dict[str, DataSlice],
    batch_tokens: int,
    seed: int,
) -> Callable[[DataSlice], list[_Prepared]]:
    """What prepares the interventions on a slice: the patch sources' clean activations are read once
    (one pass per source slice), each slice's once (one pass for every intervention that needs it)."""
    channels = {c.name: c for c in model_channels(model.spec)}
    sites = {(i.channel, i.role): _Site(model, channels[i.channel], i.role) for i in interventions}
    from_source: dict[str, dict[str, Tensor]] = {}
    for name in dict.fromkeys(i.source for i in interventions if i.action == "patch"):
        needed = {sites[(i.channel, i.role)].capture for i in interventions if i.source == name}
        from_source[name] = _capture(model, sources[name], needed, batch_tokens)  # type: ignore[index]

    def prepare(part: DataSlice) -> list[_Prepared]:
        needed = {sites[(i.channel, i.role)].capture for i in interventions if i.action in ("add", "set", "ablate")}
        captured = _capture(model, part, needed, batch_tokens) if needed else {}
        return [
            _prepare(model, bases, i, sites[(i.channel, i.role)], part, captured, from_source, sources, seed)
            for i in interventions
        ]

    return prepare


def _capture(model: LoadedModel, part: DataSlice, names: set[str], batch_tokens: int) -> dict[str, Tensor]:
    """The clean activations at ``names`` over every prompt of ``part`` (float32, on the CPU)."""
    found: dict[str, list[Tensor]] = {name: [] for name in names}

    def keeper(name: str) -> Hook:
        def keep(activation: Tensor, hook) -> None:
            found[name].append(activation.detach().float().cpu())

        return keep

    with torch.no_grad():
        for batch in part.batches(batch_tokens):
            model.run(batch.tokens, [(name, keeper(name)) for name in names], batch.mask)
    return {name: torch.cat(values) for name, values in found.items()}


def _prepare(
    model: LoadedModel,
    bases: dict[str, Tensor],
    intervention: Intervention,
    write: _Site,
    part: DataSlice,
    captured: dict[str, Tensor],
    from_source: dict[str, dict[str, Tensor]],
    sources: dict[str, DataSlice],
    seed: int,
) -> _Prepared:
    """``intervention`` with what it needs from the clean activations of ``part`` (``captured``) and of
    its patch source (``from_source``), by capture site."""
    channel = write.channel
    stored = bases[f"{channel.name}/{intervention.role}"].float() if intervention.action != "ablate" else None
    basis = intervention.basis.float() if intervention.basis is not None else stored
    if basis is not None and intervention.directions:
        basis = basis[:, list(intervention.directions)]
    prepared = _Prepared(intervention, write, basis.to(model.device) if basis is not None else torch.empty(0))
    if intervention.action in ("add", "set", "ablate"):
        activation = captured[write.capture]
        mask = part.mask[: activation.shape[0], : activation.shape[1]]
        if intervention.action == "ablate":
            own = activation[:, :, channel.head] if channel.kind == "attn_head" else activation
            weights = mask.float().view(*mask.shape, *([1] * (own.dim() - 2)))
            prepared.position_mean = ((own * weights).sum(0) / weights.sum(0).clamp_min(1)).to(model.device)
        else:
            coordinates = write.vector(activation.to(model.device)) @ prepared.basis  # [n, p, k]
            real = coordinates[mask.to(model.device)]
            prepared.mean, prepared.sd = real.mean(0), real.std(0)
    if intervention.action == "patch":
        source = intervention.source
        assert source is not None
        activation = from_source[source][write.capture]
        prepared.source = (write.vector(activation.to(model.device)) @ prepared.basis).cpu()
        prepared.order = resample_order(part.n_sequences, sources[source].n_sequences, seed)
    return prepared


def _delta(p: _Prepared, write: Tensor, prompts: Tensor) -> Tensor:
    """Δ [rows, pos, d_model] for the rows of one variant, whose clean-or-intervened write so far is
    ``write`` and whose prompts (indices in the slice) are ``prompts``."""
    i, basis = p.intervention, p.basis
    coordinates = write @ basis  # [rows, pos, k]
    if i.action == "add":
        scale = i.amount if i.raw else i.amount * p.sd  # type: ignore[operator]
        return (torch.zeros_like(coordinates) + scale) @ basis.T
    if i.action == "set":
        target = torch.as_tensor(i.amount, device=write.device) if i.raw else p.mean + i.amount * p.sd  # type: ignore[operator]
        return (target - coordinates) @ basis.T
    if i.action == "project":
        return -coordinates @ basis.T
    source = p.source[p.order[prompts]].to(write.device)  # type: ignore[index]  # [rows, p_source, k]
    width = min(source.shape[1], coordinates.shape[1])
    change = torch.zeros_like(coordinates)
    change[:, :width] = source[:, :width] - coordinates[:, :width]
    return change @ basis.T


def _hooks(prepared: Sequence[_Prepared], rows: int, prompts: Tensor) -> list[tuple[str, Hook]]:
    """Hooks for a batch of ``len(prepared) + 1`` blocks of ``rows`` rows: block 0 clean, block v+1
    under ``prepared[v]``."""
    hooks: list[tuple[str, Hook]] = []
    for v, p in enumerate(prepared):
        block = slice((v + 1) * rows, (v + 2) * rows)
        if p.intervention.action == "ablate":
            hooks.append((p.write.capture, _ablating(p, block)))
            continue
        captured: dict[str, Tensor] = {}
        if p.write.capture != p.write.apply:
            hooks.append((p.write.capture, _keeping(captured, block)))
        hooks.append((p.write.apply, _adding(p, captured, block, prompts)))
    return hooks


def _ablating(p: _Prepared, block: slice) -> Hook:
    def hook(activation: Tensor, _) -> Tensor:
        return p.write.ablated(activation, p.position_mean, block)  # type: ignore[arg-type]

    return hook


def _keeping(captured: dict[str, Tensor], block: slice) -> Hook:
    def hook(activation: Tensor, _) -> None:
        captured["write"] = activation[block]

    return hook


def _adding(p: _Prepared, captured: dict[str, Tensor], block: slice, prompts: Tensor) -> Hook:
    def hook(activation: Tensor, _) -> Tensor:
        own = captured["write"] if "write" in captured else activation[block]
        return p.write.add(activation, block, _delta(p, p.write.vector(own), prompts))

    return hook


def _writable(activation: Tensor) -> Tensor:
    """``activation`` itself (a hook's tensor is the forward's own, changed in place), or a copy when
    it is a broadcast view (stride 0, the position embedding expanded over the batch)."""
    return activation.contiguous() if 0 in activation.stride() else activation


def _scored_log_probs(logits: Tensor, targets: Targets) -> tuple[Tensor, Tensor]:
    """Log-probabilities at the scored positions [b, m, V] and which are scored [b, m]."""
    if targets.metric not in POSITIONAL:
        return logits[:, :-1].float().log_softmax(-1), targets.mask[:, 1:].to(logits.device)
    positions = targets.positions
    assert positions is not None
    index = positions.clamp_min(0).to(logits.device)
    picked = torch.gather(logits, 1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    return picked.float().log_softmax(-1), (positions >= 0).to(logits.device)


def _measure(
    model: LoadedModel, prepared: Sequence[_Prepared], part: DataSlice, batch_tokens: int, top: int
) -> list[Effect]:
    """The effects of ``prepared`` on ``part``, as many interventions per forward pass as fit in
    ``batch_tokens`` with their clean rows (at least one prompt and one intervention)."""
    group = max(1, batch_tokens // part.tokens.shape[1] - 1)
    return [
        effect
        for start in range(0, len(prepared), group)
        for effect in _measure_group(model, prepared[start : start + group], part, batch_tokens, top)
    ]


def _measure_group(
    model: LoadedModel, prepared: Sequence[_Prepared], part: DataSlice, batch_tokens: int, top: int
) -> list[Effect]:
    V = len(prepared) + 1
    rows_per_batch = max(1, batch_tokens // (part.tokens.shape[1] * V))
    deltas: list[list[Tensor]] = [[] for _ in prepared]
    accuracy: list[list[Tensor]] = [[] for _ in prepared]
    kl = torch.zeros(len(prepared), dtype=torch.float64)
    flipped = torch.zeros(len(prepared), dtype=torch.float64)
    shift = torch.zeros(len(prepared), model.spec.outputs, dtype=torch.float64)
    scored = 0
    task = part.metric in ("answer_loss", "label_loss")
    with torch.no_grad():
        for start in range(0, part.n_sequences, rows_per_batch):
            prompts = torch.arange(start, min(start + rows_per_batch, part.n_sequences))
            batch = part.rows(prompts)
            n = len(prompts)
            tokens = batch.tokens.repeat(V, 1)
            mask = batch.mask.repeat(V, 1)
            logits = model.run(tokens, _hooks(prepared, n, prompts), mask).view(V, n, *batch.tokens.shape[1:], -1)
            targets = batch.targets()
            clean_loss = sequence_losses(logits[0], batch.tokens, targets).double().cpu()
            clean_lp, valid = _scored_log_probs(logits[0], targets)
            clean_top = clean_lp.argmax(-1)
            scored += int(valid.sum())
            for v in range(len(prepared)):
                lp, _ = _scored_log_probs(logits[v + 1], targets)
                deltas[v].append(sequence_losses(logits[v + 1], batch.tokens, targets).double().cpu() - clean_loss)
                kl[v] += float(((clean_lp.exp() * (clean_lp - lp)).sum(-1) * valid).sum())
                flipped[v] += float(((lp.argmax(-1) != clean_top) & valid).sum())
                shift[v] += ((lp.exp() - clean_lp.exp()) * valid.unsqueeze(-1)).sum((0, 1)).double().cpu()
                if task:
                    answers = targets.answers.to(lp.device)  # type: ignore[union-attr]
                    right = (lp.argmax(-1) == answers).float() - (clean_top == answers).float()
                    accuracy[v].append(((right * valid).sum(1) / valid.sum(1).clamp_min(1)).double().cpu())
    effects = []
    for v, p in enumerate(prepared):
        change = torch.cat(deltas[v])
        mean_shift = shift[v] / max(scored, 1)
        order = mean_shift.argsort(descending=True)
        effects.append(
            Effect(
                p.intervention.spec,
                p.intervention.action,
                p.intervention.channel,
                part.name,
                float(change.mean()),
                float(change.std() / math.sqrt(len(change))) if len(change) > 1 else float("nan"),
                float(torch.cat(accuracy[v]).mean()) if task else None,
                float(kl[v] / max(scored, 1)),
                float(flipped[v] / max(scored, 1)),
                _tokens(model, order[:top], mean_shift),
                _tokens(model, order.flip(0)[:top], mean_shift),
            )
        )
    return effects


def _tokens(model: LoadedModel, ids: Tensor, shift: Tensor) -> list[tuple[int, str | None, float]]:
    decode: Callable[[list[int]], str] | None = getattr(model.tokenizer, "decode", None)
    return [(int(t), decode([int(t)]) if decode else None, float(shift[t])) for t in ids]
