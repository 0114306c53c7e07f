"""The d_head-space shortcuts of compression.py equal the reference formulas computed with the
full d_model x d_model data moments (docs/design.md, "Compression"), and ranks follow the stated rule."""

import pytest
import torch

from circuit_atlas.ingest.compression import (
    ov_decomposition,
    psd_roots,
    qk_decomposition,
    read_decomposition,
    select_ranks,
    write_decomposition,
)

D, DH = 12, 4


def random_psd(n, rank=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, rank or n, generator=g, dtype=torch.float64)
    return a @ a.T


def random_matrix(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_psd_roots_are_square_roots_and_pseudo_inverse_roots():
    A = random_psd(6, rank=4)
    root, inverse_root = psd_roots(A)
    torch.testing.assert_close(root @ root, A)
    projector = root @ inverse_root  # onto the range of A
    torch.testing.assert_close(projector @ A, A)
    torch.testing.assert_close(torch.linalg.matrix_rank(inverse_root), torch.tensor(4))


def test_ov_shortcut_equals_the_reference_svd_and_truncated_map():
    S, G = random_psd(D, seed=1), random_psd(D, seed=2)
    W_V, W_O = random_matrix(D, DH, seed=3), random_matrix(DH, D, seed=4)
    S_root, S_inverse_root = psd_roots(S)
    G_root, G_inverse_root = psd_roots(G)
    reference = S_root @ W_V @ W_O @ G_root
    U, sigma, Vh = torch.linalg.svd(reference)
    dec = ov_decomposition((W_V.T @ S @ W_V)[None, None], G[None], W_V[None, None], W_O[None, None])
    torch.testing.assert_close(dec.sigma[0, 0], sigma[:DH])
    for k in range(1, DH + 1):
        truncated = S_inverse_root @ U[:, :k] @ torch.diag(sigma[:k]) @ Vh[:k] @ G_inverse_root
        side = dec.sides["v"]
        projector = side.project_in[0, 0, :, :k] @ side.project_out[0, 0, :, :k].T
        torch.testing.assert_close(W_V @ projector @ W_O, truncated)
        # read functionals and write directions span the reference subspaces
        reads, writes = side.directions[0, 0, :, :k], dec.sides["out"].directions[0, 0, :, :k]
        for mine, theirs in ((reads, S_inverse_root @ U[:, :k]), (writes, G_inverse_root @ Vh[:k].T)):
            q_mine, q_theirs = torch.linalg.qr(mine)[0], torch.linalg.qr(theirs)[0]
            torch.testing.assert_close(q_mine @ q_mine.T, q_theirs @ q_theirs.T)


def test_qk_shortcut_equals_the_reference_svd_and_truncated_bilinear_map():
    S_q, S_k = random_psd(D, seed=5), random_psd(D, seed=6)
    W_Q, W_K = random_matrix(D, DH, seed=7), random_matrix(D, DH, seed=8)
    Sq_root, Sq_inverse_root = psd_roots(S_q)
    Sk_root, Sk_inverse_root = psd_roots(S_k)
    U, sigma, Vh = torch.linalg.svd(Sq_root @ W_Q @ W_K.T @ Sk_root)
    dec = qk_decomposition(
        (W_Q.T @ S_q @ W_Q)[None, None], (W_K.T @ S_k @ W_K)[None, None], W_Q[None, None], W_K[None, None]
    )
    torch.testing.assert_close(dec.sigma[0, 0], sigma[:DH])
    for k in range(1, DH + 1):
        truncated = Sq_inverse_root @ U[:, :k] @ torch.diag(sigma[:k]) @ Vh[:k] @ Sk_inverse_root
        q, kk = dec.sides["q"], dec.sides["k"]
        Pq = q.project_in[0, 0, :, :k] @ q.project_out[0, 0, :, :k].T
        Pk = kk.project_in[0, 0, :, :k] @ kk.project_out[0, 0, :, :k].T
        torch.testing.assert_close((W_Q @ Pq) @ (W_K @ Pk).T, truncated)


def test_black_box_reader_and_writer_projections_are_the_truncated_maps():
    S, H = random_psd(D, seed=9), random_psd(D, rank=5, seed=10)
    dec = read_decomposition(S, H)
    assert (dec.sigma[5:] < 1e-6 * dec.sigma[0]).all()  # H has rank 5
    _S_root, _ = psd_roots(S)
    x = random_matrix(3, D, seed=11)
    side = dec.sides["in"]
    full = x @ side.project_in @ side.project_out.T
    torch.testing.assert_close(full, x)  # all directions kept: identity on the data
    Y, G = random_psd(D, seed=12), random_psd(D, seed=13)
    write = write_decomposition(Y, G).sides["out"]
    torch.testing.assert_close(x @ write.project_in @ write.project_out.T, x)


def test_ranks_cover_the_rank_fraction_respect_the_cap_and_the_floor():
    sigma = torch.tensor([[3.0, 2.0, 1.0, 0.0], [1e-4, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    # squared importances of row 0: 9, 4, 1 of 14 -> coverage 0.643, 0.929, 1.0
    assert select_ranks(sigma, 0.9, None, 1e-3).tolist() == [2, 0, 4]
    assert select_ranks(sigma, 0.95, None, 1e-3).tolist() == [3, 0, 4]
    assert select_ranks(sigma, 0.95, 2, 1e-3).tolist() == [2, 0, 2]
    assert select_ranks(sigma, 0.5, None, 0.0).tolist() == [1, 1, 2]


def reference_eigen(root: torch.Tensor, moment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The importances (square roots of the eigenvalues, descending) and eigenvectors of
    root @ moment @ root, by torch.linalg.eigh alone."""
    values, vectors = torch.linalg.eigh(root @ moment @ root)
    return values.flip(0).clamp_min(0).sqrt(), vectors.flip(1)


def square_roots(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A^{1/2} and A^{-1/2} of a full-rank PSD matrix, from its own eigendecomposition."""
    values, vectors = torch.linalg.eigh(A)
    return vectors @ torch.diag(values.sqrt()) @ vectors.T, vectors @ torch.diag(values.rsqrt()) @ vectors.T


def span_projector(columns: torch.Tensor) -> torch.Tensor:
    q = torch.linalg.qr(columns)[0]
    return q @ q.T


def test_black_box_decompositions_at_every_rank_below_full_are_the_reference_ones():
    """Reader: functionals S^{-1/2} U_k, truncated map x S^{-1/2} U_k U_kᵀ S^{1/2}, with U the
    eigenvectors of S^{1/2} H S^{1/2}. Writer: directions G^{-1/2} V_k, truncated map
    y G^{1/2} V_k V_kᵀ G^{-1/2}, with V those of G^{1/2} E[y yᵀ] G^{1/2}. At every rank k the
    compression's directions span the reference subspace, its projector (Compression.projection, at
    the stored rank and not one direction more) is the reference map, and a role's coverage is the
    share of the squared importances its rank keeps."""
    from circuit_atlas.ingest.channels import Channel
    from circuit_atlas.ingest.compression import Compression

    S, H = random_psd(D, seed=21), random_psd(D, rank=6, seed=22)  # H's null space: ranks above 6 are arbitrary
    Y, G = random_psd(D, seed=23), random_psd(D, seed=24)
    S_root, S_inverse_root = square_roots(S)
    G_root, G_inverse_root = square_roots(G)
    read_values, U = reference_eigen(S_root, H)
    write_values, V = reference_eigen(G_root, Y)
    decompositions = {"unembed": read_decomposition(S, H), "embed": write_decomposition(Y, G)}
    torch.testing.assert_close(decompositions["unembed"].sigma[:6], read_values[:6])
    torch.testing.assert_close(decompositions["embed"].sigma, write_values)
    unembed = Channel("unembed", 1, None, "unembed", 3, 1)
    embed = Channel("embed", -1, None, "embed", 0, 0)
    cases = [
        ("unembed", "in", unembed, S_inverse_root @ U, read_values, 6),
        ("embed", "out", embed, G_inverse_root @ V, write_values, D - 1),
    ]
    for group, role, channel, directions, values, top in cases:
        for k in range(1, top + 1):
            compression = Compression(decompositions, 1.0, k, 0.0)
            assert compression.rank(channel, role) == k
            side = decompositions[group].sides[role]
            torch.testing.assert_close(span_projector(side.directions[:, :k]), span_projector(directions[:, :k]))
            torch.testing.assert_close(
                span_projector(compression.basis(channel, role)), span_projector(directions[:, :k])
            )
            if role == "in":
                reference = S_inverse_root @ U[:, :k] @ U[:, :k].T @ S_root
            else:
                reference = G_root @ V[:, :k] @ V[:, :k].T @ G_inverse_root
            torch.testing.assert_close(compression.projection(group, role), reference)
            coverage = float(values[:k].square().sum() / decompositions[group].sigma.square().sum())
            assert compression.coverage(channel, role) == pytest.approx(coverage, rel=1e-9)
