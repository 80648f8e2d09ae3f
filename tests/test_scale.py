"""Log-sum-exp in pieces (chapter 6): merging the (m, s) statistics of
pieces of a row gives torch.logsumexp, in any number of pieces, also when
logits, whole pieces or whole rows are -inf (masked classes)."""

import math

import pytest
import torch

from ce_lib.scale import logsumexp_in_pieces, logsumexp_stats, merge_logsumexp

INF = math.inf


@pytest.mark.parametrize("pieces", [1, 2, 3, 7, 64, 100])
def test_merged_pieces_equal_torch_logsumexp(pieces):
    g = torch.Generator().manual_seed(0)
    z = 40 * torch.randn(5, 64, generator=g, dtype=torch.float64)
    got = logsumexp_in_pieces(z, pieces)
    torch.testing.assert_close(got, torch.logsumexp(z, dim=-1), rtol=1e-13,
                               atol=1e-13)  # fmt: skip


def test_a_piece_of_only_minus_infinity_is_not_nan():
    z = torch.tensor([[1.0, 2.0, -INF, -INF], [-INF, -INF, 3.0, -INF]],
                     dtype=torch.float64)  # fmt: skip
    for pieces in (1, 2, 4):
        got = logsumexp_in_pieces(z, pieces)
        torch.testing.assert_close(got, torch.logsumexp(z, dim=-1))


def test_a_row_of_only_minus_infinity_gives_minus_infinity():
    z = torch.full((2, 6), -INF, dtype=torch.float64)
    z[1, 4] = 0.5
    got = logsumexp_in_pieces(z, 3)
    assert got[0].item() == -INF
    assert got[1].item() == 0.5
    m, s = merge_logsumexp(
        logsumexp_stats(z[0, :3]), logsumexp_stats(z[0, 3:])
    )
    assert m.item() == -INF and s.item() == 0.0
