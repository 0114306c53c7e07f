"""Compression: every channel's read and write subspaces, from the moments (docs/design.md, "Compression").

Each channel map is factorised as M = Σ_i σ_i a_i b_iᵀ, with σ_i its importances:

- OV of head h: M = S_v^{1/2} W_V W_O G^{1/2}. With A = W_Vᵀ S_v W_V (the ``vv`` moment,
  d_head x d_head) and the polar factor S_v^{1/2} W_V = O A^{1/2}, M = O (A^{1/2} W_O G^{1/2}), so
  the SVD of the small N = A^{1/2} W_O G^{1/2} = U Σ Vᵀ is M's SVD. Read functionals (role
  ``v``): S_v^{-1/2} O U = W_V A^{-1/2} U; write directions (role ``out``): G^{-1/2} V.
- QK of head h: M = S_q^{1/2} W_Q W_Kᵀ S_k^{1/2} = O_q (A_q^{1/2} A_k^{1/2}) O_kᵀ with
  A_q = ``qq``, A_k = ``kk``: SVD of A_q^{1/2} A_k^{1/2}; read functionals W_Q A_q^{-1/2} U
  (role ``q``) and W_K A_k^{-1/2} V (role ``k``).
- A nonlinear reader (MLP ``in``, unembedding ``in``): eigenvectors U of S^{1/2} H S^{1/2}, with
  H = E[g_x̂ g_x̂ᵀ] the Fisher at the input; functionals S^{-1/2} U.
- A writer treated as a black box (MLP ``out``, embeddings): eigenvectors V of
  G^{1/2} E[y yᵀ] G^{1/2}; directions G^{-1/2} V.

Changes from the reference estimators, and why: S_k and S_v enter only through the d_head x
d_head moments (exactly equal, d_head/d_model of the cost); the MLP read uses the Fisher
E[Jᵀ g gᵀ J] at its input (one d x d moment) instead of W_in (P ⊙ E[σ'σ'ᵀ]) W_inᵀ, which needs
a d_mlp x d_mlp moment, does not assume g independent of x, and works for any MLP (gated too);
and it is weighted by S^{1/2} on both sides like the OV read, so a direction counts only as much
as the data moves along it.

Compressing a channel at rank k is the truncated map itself: the input of a read side is
projected by x ↦ x F_k E_kᵀ (for heads in d_head space: ṽ ↦ ṽ A^{-1/2} U_k U_kᵀ A^{1/2}, which
is W_V ↦ W_V A^{-1/2} U_k U_kᵀ A^{1/2}, i.e. OV ↦ S^{-1/2} U_k Σ_k V_kᵀ G^{-1/2}), the output of
a black-box writer by y ↦ y G^{1/2} V_k V_kᵀ G^{-1/2}.

Ranks: the smallest k whose σ² cover ``rank_fraction`` of Σσ² (less :data:`NOISE_SHARE`), capped by
``max_rank``, and 0 for a channel whose total importance Σσ is below ``floor`` times the largest of
its group in the model. A rank's *coverage* is the share of Σσ² it keeps, Σ_{i<k} σ_i² / Σσ².
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from .channels import Channel
from .model_adapter import Weights
from .statistics import Moments

#: Eigenvalues below this fraction of the largest count as zero in pseudo-inverse roots.
EIGENVALUE_FLOOR = 1e-10

#: A share of Σσ² this small is float32 noise (moments of float32 activations): a rank covers the
#: rank fraction less this, so a rank fraction of 1 (``--energy 1``) keeps every direction above the
#: noise and none below it.
NOISE_SHARE = 1e-8

#: Decomposition groups: (group, sides). A channel kind maps to one or two groups.
GROUPS = {
    "qk": ("q", "k"),
    "ov": ("v", "out"),
    "mlp_in": ("in",),
    "mlp_out": ("out",),
    "embed": ("out",),
    "pos_embed": ("out",),
    "unembed": ("in",),
}
KIND_GROUPS = {
    "attn_head": ("qk", "ov"),
    "mlp": ("mlp_in", "mlp_out"),
    "embed": ("embed",),
    "pos_embed": ("pos_embed",),
    "unembed": ("unembed",),
}


def psd_roots(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """(A^{1/2}, A^{+1/2}) of symmetric PSD ``A`` [..., n, n]; eigenvalues under the floor are 0."""
    values, vectors = torch.linalg.eigh(matrix.double())
    floor = EIGENVALUE_FLOOR * values.amax(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    kept = values > floor
    root = values.clamp_min(0).sqrt()
    inverse_root = torch.where(kept, 1 / root.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(root))
    return (vectors * root.unsqueeze(-2)) @ vectors.mT, (vectors * inverse_root.unsqueeze(-2)) @ vectors.mT


def _descending_eigh(matrix: Tensor) -> tuple[Tensor, Tensor]:
    values, vectors = torch.linalg.eigh(matrix)
    return values.flip(-1).clamp_min(0).sqrt(), vectors.flip(-1)


@dataclass
class Side:
    """One role of a decomposition: columns ordered by importance.

    ``directions`` [..., d_model, n]: read functionals or write directions in the residual
    stream. ``project_in`` / ``project_out`` [..., m, n]: the rank-k compression of the
    activation the hook sees (m = d_head or d_model) is x ↦ x project_in[:, :k] project_out[:, :k]ᵀ;
    None where another side of the same map already does the truncation.
    """

    directions: Tensor
    project_in: Tensor | None = None
    project_out: Tensor | None = None


@dataclass
class Decomposition:
    sigma: Tensor  # [..., n], descending
    sides: dict[str, Side]


def ov_decomposition(vv: Tensor, G: Tensor, W_V: Tensor, W_O: Tensor) -> Decomposition:
    """Per head [L, H]: ``vv`` [L, H, dh, dh], ``G`` [L, d, d], W_V [L, H, d, dh], W_O [L, H, dh, d]."""
    A_root, A_inverse_root = psd_roots(vv)
    G_root, G_inverse_root = psd_roots(G)
    N = A_root @ W_O.double() @ G_root.unsqueeze(1)
    U, sigma, Vh = torch.linalg.svd(N, full_matrices=False)
    read = Side(W_V.double() @ A_inverse_root @ U, A_inverse_root @ U, A_root @ U)
    write = Side(G_inverse_root.unsqueeze(1) @ Vh.mT)
    return Decomposition(sigma, {"v": read, "out": write})


def qk_decomposition(qq: Tensor, kk: Tensor, W_Q: Tensor, W_K: Tensor) -> Decomposition:
    """Per head [L, H]: the bilinear map S_q^{1/2} W_Q W_Kᵀ S_k^{1/2}."""
    Aq_root, Aq_inverse_root = psd_roots(qq)
    Ak_root, Ak_inverse_root = psd_roots(kk)
    U, sigma, Vh = torch.linalg.svd(Aq_root @ Ak_root)
    V = Vh.mT
    return Decomposition(
        sigma,
        {
            "q": Side(W_Q.double() @ Aq_inverse_root @ U, Aq_inverse_root @ U, Aq_root @ U),
            "k": Side(W_K.double() @ Ak_inverse_root @ V, Ak_inverse_root @ V, Ak_root @ V),
        },
    )


def read_decomposition(S: Tensor, H: Tensor) -> Decomposition:
    """A black-box reader: eigenvectors of S^{1/2} H S^{1/2}, functionals S^{-1/2} U."""
    S_root, S_inverse_root = psd_roots(S)
    sigma, U = _descending_eigh(S_root @ H.double() @ S_root)
    return Decomposition(sigma, {"in": Side(S_inverse_root @ U, S_inverse_root @ U, S_root @ U)})


def write_decomposition(Y: Tensor, G: Tensor) -> Decomposition:
    """A black-box writer: eigenvectors of G^{1/2} E[y yᵀ] G^{1/2}, directions G^{-1/2} V."""
    G_root, G_inverse_root = psd_roots(G)
    sigma, V = _descending_eigh(G_root @ Y.double() @ G_root)
    return Decomposition(sigma, {"out": Side(G_inverse_root @ V, G_root @ V, G_inverse_root @ V)})


def activation_weighted(moments: Moments, reader_grams: tuple[Tensor, Tensor]) -> Moments:
    """``moments`` with the loss taken out of the importances (``--importance activation``): every
    G the identity (directions of the residual stream weigh alike), each nonlinear reader's
    Fisher H the Gram matrix W Wᵀ of its input weights (``reader_grams``: MLPs [L, d, d], the
    unembedding [d, d]), and the keys' spread around each query's plain mean of the keys it sees
    (``kk_seen``) in place of the spread its attention weighs (a saturated softmax weighs all keys
    but one at ~0). A direction counts by how much the data moves it through the weights, whatever
    the loss's gradient or the softmax's slope there: for models flat on their data, such as compiled ones."""
    mlp_gram, unembed_gram = reader_grams
    identity = torch.eye(len(moments.G_embed), dtype=moments.G_embed.dtype, device=moments.G_embed.device)
    return replace(
        moments,
        kk=moments.kk_seen,
        G_attn=identity.expand_as(moments.G_attn).clone(),
        G_mlp=identity.expand_as(moments.G_mlp).clone(),
        G_embed=identity.clone(),
        H_mlp=mlp_gram.to(moments.H_mlp),
        H_final=unembed_gram.to(moments.H_final),
    )


def decompose(moments: Moments, weights: Weights) -> dict[str, Decomposition]:
    """Every group's decomposition; heads batched [L, H], MLPs [L] (no MLP groups without MLPs),
    singletons unbatched."""
    mlps = (
        {
            "mlp_in": read_decomposition(moments.S_mlp, moments.H_mlp),
            "mlp_out": write_decomposition(moments.Y_mlp, moments.G_mlp),
        }
        if moments.has_mlp
        else {}
    )
    groups = {
        "qk": qk_decomposition(
            moments.qq, moments.kk, weights.W_Q.to(moments.qq.device), weights.W_K.to(moments.qq.device)
        ),
        "ov": ov_decomposition(
            moments.vv, moments.G_attn, weights.W_V.to(moments.vv.device), weights.W_O.to(moments.vv.device)
        ),
        **mlps,
        "embed": write_decomposition(moments.Y_embed, moments.G_embed),
        "unembed": read_decomposition(moments.S_final, moments.H_final),
    }
    if moments.Y_pos is not None:
        groups["pos_embed"] = write_decomposition(moments.Y_pos, moments.G_embed)
    return groups


def select_ranks(sigma: Tensor, rank_fraction: float, max_rank: int | None, floor: float) -> Tensor:
    """Rank per channel of a group (see module docstring); ``sigma`` [..., n] descending."""
    squared = sigma.square()
    total = squared.sum(-1, keepdim=True)
    covered = squared.cumsum(-1) / total.clamp_min(torch.finfo(sigma.dtype).tiny)
    ranks = (covered < rank_fraction - NOISE_SHARE).sum(-1) + 1
    ranks = ranks.clamp(max=sigma.shape[-1] if max_rank is None else min(max_rank, sigma.shape[-1]))
    importance = sigma.sum(-1)
    dormant = importance <= floor * importance.max()
    return torch.where(dormant | (importance == 0), torch.zeros_like(ranks), ranks)


def channel_index(channel: Channel) -> tuple[int, ...]:
    """Where a channel sits in its groups' batch dimensions."""
    if channel.kind == "attn_head":
        if channel.head is None:
            raise ValueError(f"{channel.name} is an attention head without a head index")
        return (channel.layer, channel.head)
    if channel.kind == "mlp":
        return (channel.layer,)
    return ()


@dataclass
class Compression:
    """Decompositions plus the ranks chosen for one ``rank_fraction``."""

    decompositions: dict[str, Decomposition]
    rank_fraction: float
    max_rank: int | None
    floor: float
    ranks: dict[str, Tensor] = field(init=False)
    _bases: dict[tuple[Channel, str], Tensor] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.ranks = {
            group: select_ranks(dec.sigma, self.rank_fraction, self.max_rank, self.floor)
            for group, dec in self.decompositions.items()
        }

    def group_of(self, channel: Channel, role: str) -> str:
        return next(g for g in KIND_GROUPS[channel.kind] if role in GROUPS[g])

    def rank(self, channel: Channel, role: str) -> int:
        return int(self.ranks[self.group_of(channel, role)][channel_index(channel)])

    def singular_values(self, channel: Channel, role: str) -> Tensor:
        return self.decompositions[self.group_of(channel, role)].sigma[channel_index(channel)]

    def basis(self, channel: Channel, role: str) -> Tensor:
        """Orthonormal basis [d_model, rank] of the role's subspace, Gram–Schmidt in importance order."""
        if (channel, role) not in self._bases:
            self._bases[(channel, role)] = self._orthonormal(channel, role)
        return self._bases[(channel, role)]

    def _orthonormal(self, channel: Channel, role: str) -> Tensor:
        group = self.group_of(channel, role)
        directions = self.decompositions[group].sides[role].directions[channel_index(channel)]
        k = self.rank(channel, role)
        if k == 0:
            return directions[:, :0]
        q, r = torch.linalg.qr(directions[:, :k])
        return q * torch.where(torch.diagonal(r) >= 0, 1.0, -1.0).to(q)  # column i keeps the sign of direction i

    def coverage(self, channel: Channel, role: str) -> float:
        """Σ_{i<k} σ_i² / Σσ² at the role's rank k (the ``energy`` column of ``subspaces``): at least the
        rank fraction less the noise, unless ``max_rank`` caps the rank or ``floor`` makes it 0."""
        sigma = self.singular_values(channel, role)
        total = float(sigma.square().sum())
        return float(sigma[: self.rank(channel, role)].square().sum()) / total if total > 0 else 0.0

    def projection(self, group: str, role: str) -> Tensor:
        """The rank-k projector of every channel of ``group`` for ``role`` [..., m, m]."""
        side = self.decompositions[group].sides[role]
        if side.project_in is None or side.project_out is None:
            raise ValueError(f"{group} {role} has no projection: another side of its map truncates it")
        k = self.ranks[group]
        keep = (torch.arange(side.project_in.shape[-1], device=k.device) < k.unsqueeze(-1)).to(side.project_in)
        return (side.project_in * keep.unsqueeze(-2)) @ side.project_out.mT
