"""Slice metrics: what a slice measures on each prompt, as a loss (lower is better).

============================  ==============================================================
metric                        per prompt
============================  ==============================================================
``next_token_loss``           mean cross-entropy of every real next token
``answer_loss``               mean cross-entropy of ``answer`` at the scored positions
``label_loss``                the same, for a class ``label`` (the output vocabulary is the
                              set of classes)
``logit_diff``                minus the mean of logit[answer] - logit[counterfactual] at the
                              scored positions: stored as a loss, so that an ablation effect
                              L(ablated) - L(clean) is positive where the channel helps,
                              for every metric
============================  ==============================================================

The logits at a scored position are the model's prediction of the token after it: for a prompt
ending in its last token, position -1 predicts the answer. Padded positions are never scored.

The statistics pass needs, for its output weighting, a loss whose gradient's second moment is the
Fisher: :func:`sampled_loss` is the cross-entropy against labels *sampled from the model's own
prediction* at the positions the metric scores. ``logit_diff`` is no likelihood, so its
weighting uses the gradient of the metric itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

METRICS = ("next_token_loss", "answer_loss", "label_loss", "logit_diff")
#: Metrics scored at given positions against given answers (the others score every next token).
POSITIONAL = ("answer_loss", "label_loss", "logit_diff")


@dataclass(frozen=True)
class Targets:
    """What a batch of prompts is scored on: [b, p] real-token mask, and for positional metrics the
    scored positions [b, m] (absolute; -1 where a prompt has fewer than m), answers and
    counterfactuals [b, m]."""

    metric: str
    mask: Tensor
    positions: Tensor | None = None
    answers: Tensor | None = None
    counterfactuals: Tensor | None = None


def _required(value: Tensor | None, field: str, targets: Targets) -> Tensor:
    """A field of the targets that a positional metric scores with (None only for the others)."""
    if value is None:
        raise ValueError(f"the metric {targets.metric} needs the targets' {field}")
    return value


def _scored_logits(logits: Tensor, targets: Targets) -> tuple[Tensor, Tensor]:
    """The logits at every scored position [b, m, V] (float32) and which exist [b, m]."""
    positions = _required(targets.positions, "positions", targets)
    valid = positions >= 0
    index = positions.clamp_min(0).to(logits.device)
    picked = torch.gather(logits, 1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    return picked.float(), valid.to(logits.device)


def _next_token(logits: Tensor, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Predictions [b, p-1, V], their targets [b, p-1] and which are real [b, p-1]."""
    return logits[:, :-1].float(), tokens[:, 1:].to(logits.device), mask[:, 1:].to(logits.device)


def _cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of ``labels`` [...] under ``logits`` [..., V], elementwise."""
    flat = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    return flat.view(labels.shape)


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    return (values * valid).sum(-1) / valid.sum(-1).clamp_min(1)


def position_losses(logits: Tensor, tokens: Tensor, targets: Targets) -> tuple[Tensor, Tensor]:
    """The metric's value at each scored position [b, m] and which are scored [b, m]: for
    ``next_token_loss`` every next token (m = p - 1), else the targets' positions."""
    if targets.metric == "next_token_loss":
        predicted, labels, valid = _next_token(logits, tokens, targets.mask)
        return _cross_entropy(predicted, labels.clamp_min(0)), valid
    scored, valid = _scored_logits(logits, targets)
    answers = _required(targets.answers, "answers", targets).clamp_min(0).to(logits.device)
    if targets.metric == "logit_diff":
        counterfactuals = _required(targets.counterfactuals, "counterfactuals", targets).clamp_min(0).to(logits.device)
        difference = scored.gather(-1, answers.unsqueeze(-1)) - scored.gather(-1, counterfactuals.unsqueeze(-1))
        return -difference.squeeze(-1), valid
    return _cross_entropy(scored, answers), valid


def sequence_losses(logits: Tensor, tokens: Tensor, targets: Targets) -> Tensor:
    """The metric of each prompt [b] (a loss; see the module docstring): the mean of its
    :func:`position_losses` over its scored positions."""
    return _masked_mean(*position_losses(logits, tokens, targets))


def chance_level(metric: str, d_vocab: int) -> float:
    """The metric of a uniform prediction over the ``d_vocab`` outputs: log d_vocab for the
    cross-entropies, 0 for ``logit_diff`` (no preference between answer and counterfactual)."""
    return 0.0 if metric == "logit_diff" else math.log(d_vocab)


def sample_labels(logits: Tensor, generator: torch.Generator) -> Tensor:
    """One label per position drawn from the model's own prediction softmax(logits) [..., V] -> [...].

    Inverse-CDF sampling with uniforms from ``generator`` (a CPU generator), so that a seed draws
    the same labels on every device (a CUDA generator's stream differs from the CPU's).
    """
    with torch.no_grad():
        probabilities = torch.softmax(logits.reshape(-1, logits.shape[-1]).float(), -1)
        # Non-finite logits are reported after the pass (no host sync here): sample those rows uniformly.
        probabilities = torch.where(torch.isfinite(probabilities), probabilities, torch.ones_like(probabilities))
        cumulative = probabilities.cumsum(-1)
        uniform = torch.rand(cumulative.shape[0], 1, generator=generator).to(cumulative.device)
        labels = torch.searchsorted(cumulative, uniform * cumulative[:, -1:], right=True)
        return labels.clamp_max(logits.shape[-1] - 1).view(logits.shape[:-1])


def sampled_loss(logits: Tensor, tokens: Tensor, targets: Targets, generator: torch.Generator) -> Tensor:
    """Σ over the scored positions of the cross-entropy against labels sampled from the model's
    prediction there (its gradient's second moment is the Fisher); for ``logit_diff``, Σ over
    prompts of the metric itself."""
    if targets.metric == "next_token_loss":
        predicted, _, valid = _next_token(logits, tokens, targets.mask)
    elif targets.metric == "logit_diff":
        return sequence_losses(logits, tokens, targets).sum()
    else:
        predicted, valid = _scored_logits(logits, targets)
    return (_cross_entropy(predicted, sample_labels(predicted, generator)) * valid).sum()
