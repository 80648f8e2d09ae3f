"""Bad input raises ValueError naming the argument; good input of any kind
is converted."""

import math

import numpy as np
import pytest
import torch

from ce_lib import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    distribution_focal_loss,
    entropy,
    integral,
    kl_divergence,
    two_hot,
)

NAN = math.nan
Z, T = torch.randn(3, 4), torch.tensor([0, 1, 2])

BAD_INPUTS = {
    "bce p below 0": (
        lambda: binary_cross_entropy([-0.1, 0.9], [0.0, 1.0]),
        r"p must lie in \[0, 1\]; got values in \[-0.1, 0.9\]",
    ),
    "bce p above 1": (
        lambda: binary_cross_entropy([0.5, 1.5], [0.0, 1.0]),
        r"p must lie in \[0, 1\]",
    ),
    "bce p NaN": (
        lambda: binary_cross_entropy([0.5, NAN], [0.0, 1.0]),
        "p must not contain NaN",
    ),
    "bce y outside": (
        lambda: binary_cross_entropy([0.5, 0.5], [0.0, 2.0]),
        r"y must lie in \[0, 1\]",
    ),
    "bce y NaN": (
        lambda: binary_cross_entropy([0.5, 0.5], [0.0, NAN]),
        "y must not contain NaN",
    ),
    "bce shapes": (
        lambda: binary_cross_entropy([0.5, 0.5], [0.0]),
        "p and y must have the same shape",
    ),
    "bce reduction": (
        lambda: binary_cross_entropy([0.5], [1.0], reduction="avg"),
        r"reduction must be one of 'none', 'mean', 'sum'; got 'avg'",
    ),
    "bce empty mean": (
        lambda: binary_cross_entropy([], []),
        "nothing to average",
    ),
    "logits z NaN": (
        lambda: binary_cross_entropy_with_logits([NAN, 1.0], [0.0, 1.0]),
        "z must be finite",
    ),
    "logits z inf": (
        lambda: binary_cross_entropy_with_logits(
            [math.inf], [1.0], reduction="none"
        ),
        "z must be finite",
    ),
    "logits y NaN": (
        lambda: binary_cross_entropy_with_logits(
            [0.0, 1.0], [0.0, NAN], reduction="sum"
        ),
        "y must be finite",
    ),
    "logits y inf": (
        lambda: binary_cross_entropy_with_logits(
            [0.0], [math.inf], reduction="none"
        ),
        "y must be finite",
    ),
    "logits pos_weight NaN": (
        lambda: binary_cross_entropy_with_logits(
            [1.0], [1.0], pos_weight=[NAN]
        ),
        "pos_weight must be finite",
    ),
    "logits shapes": (
        lambda: binary_cross_entropy_with_logits(
            torch.zeros(3), torch.zeros(4)
        ),
        "z and y must have the same shape",
    ),
    "logits pos_weight shape": (
        lambda: binary_cross_entropy_with_logits(
            torch.zeros(2, 3), torch.zeros(2, 3), pos_weight=torch.ones(4)
        ),
        "pos_weight must broadcast",
    ),
    "logits reduction": (
        lambda: binary_cross_entropy_with_logits(
            [0.0], [1.0], reduction="avg"
        ),
        "reduction must be one of",
    ),
    "ce class index too big": (
        lambda: cross_entropy(Z, torch.tensor([0, 4, 1])),
        r"target must be a class index in \[0, 4\)",
    ),
    "ce class index negative": (
        lambda: cross_entropy(Z, torch.tensor([0, -1, 1])),
        r"target must be a class index in \[0, 4\)",
    ),
    "ce batch sizes": (
        lambda: cross_entropy(Z, torch.tensor([0, 1])),
        r"target must be class indices of shape \(N,\)",
    ),
    "ce probability shape": (
        lambda: cross_entropy(Z, torch.full((3, 5), 0.2)),
        "logits and target must have the same shape",
    ),
    "ce probabilities outside": (
        lambda: cross_entropy(Z, torch.full((3, 4), 1.5)),
        r"target must lie in \[0, 1\]",
    ),
    "ce logits NaN": (
        lambda: cross_entropy(torch.tensor([[0.0, NAN]]), torch.tensor([0])),
        "logits must not contain NaN",
    ),
    "ce logits NaN, probabilities": (
        lambda: cross_entropy(
            torch.tensor([[0.0, NAN]]), torch.tensor([[0.5, 0.5]])
        ),
        "logits must not contain NaN",
    ),
    "ce logits scalar": (
        lambda: cross_entropy(torch.tensor(1.0), torch.tensor(0)),
        r"logits must have shape \(N, C, d1, ..., dK\) or \(C,\)",
    ),
    "ce spatial target shape": (
        lambda: cross_entropy(
            torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long)
        ),
        r"target must be class indices of shape \(N, d1, ..., dK\) = \(2, 4\)",
    ),
    "ce weight shape": (
        lambda: cross_entropy(Z, T, weight=torch.ones(3)),
        r"weight must have shape \(C,\)",
    ),
    "ce smoothing above 1": (
        lambda: cross_entropy(Z, T, label_smoothing=1.5),
        r"label_smoothing must lie in \[0, 1\]",
    ),
    "ce smoothing negative": (
        lambda: cross_entropy(Z, T, label_smoothing=-0.1),
        r"label_smoothing must lie in \[0, 1\]",
    ),
    "ce reduction": (
        lambda: cross_entropy(Z, T, reduction="avg"),
        "reduction must be one of",
    ),
    "ce ignore_index with probabilities": (
        lambda: cross_entropy(Z, torch.full((3, 4), 0.25), ignore_index=1),
        "ignore_index is only for class-index targets",
    ),
    "ce all ignored": (
        lambda: cross_entropy(Z, torch.full((3,), -100)),
        "nothing to average",
    ),
    "two_hot y above": (
        lambda: two_hot([5.0], 5),
        r"y must lie in \[0, 4\]; got values in \[5, 5\]",
    ),
    "two_hot y below": (
        lambda: two_hot([-0.5], torch.tensor([0.0, 1.0])),
        r"y must lie in \[0, 1\]",
    ),
    "two_hot y NaN": (lambda: two_hot([NAN], 5), "y must not contain NaN"),
    "two_hot bins decreasing": (
        lambda: two_hot([1.0], torch.tensor([0.0, 2.0, 1.0])),
        "bins must be strictly increasing",
    ),
    "two_hot bins repeated": (
        lambda: two_hot([1.0], torch.tensor([0.0, 1.0, 1.0])),
        "bins must be strictly increasing",
    ),
    "two_hot bins too few": (
        lambda: two_hot([0.0], 1),
        "bins must be at least 2",
    ),
    "dfl y above": (
        lambda: distribution_focal_loss(
            torch.zeros(2, 5), torch.tensor([1.0, 4.5])
        ),
        r"y must lie in \[0, 4\]",
    ),
    "dfl y NaN": (
        lambda: distribution_focal_loss(
            torch.zeros(2, 5), torch.tensor([1.0, NAN])
        ),
        "y must not contain NaN",
    ),
    "dfl shapes": (
        lambda: distribution_focal_loss(torch.zeros(3, 5), torch.zeros(2)),
        r"logits must have shape y.shape \+ \(K,\)",
    ),
    "dfl bins count": (
        lambda: distribution_focal_loss(
            torch.zeros(2, 5), torch.zeros(2), bins=torch.arange(4.0)
        ),
        "bins must have K = 5 positions",
    ),
    "dfl bins decreasing": (
        lambda: distribution_focal_loss(
            torch.zeros(1, 3),
            torch.zeros(1),
            bins=torch.tensor([0.0, 2.0, 1.0]),
        ),
        "bins must be strictly increasing",
    ),
    "dfl logits NaN": (
        lambda: distribution_focal_loss(
            torch.tensor([[0.0, NAN, 1.0]]), torch.tensor([0.5])
        ),
        "logits must not contain NaN",
    ),
    "dfl reduction": (
        lambda: distribution_focal_loss(
            torch.zeros(1, 3), torch.zeros(1), reduction="avg"
        ),
        "reduction must be one of",
    ),
    "integral bins": (
        lambda: integral(torch.zeros(2, 5), bins=torch.tensor([0.0, 1.0])),
        "bins must have K = 5 positions",
    ),
    "entropy p outside": (
        lambda: entropy([1.2, -0.2]),
        r"p must lie in \[0, 1\]",
    ),
    "entropy p NaN": (lambda: entropy([0.5, NAN]), "p must not contain NaN"),
    "kl q outside": (
        lambda: kl_divergence([0.5, 0.5], [1.5, -0.5]),
        r"q must lie in \[0, 1\]",
    ),
    "kl p NaN": (
        lambda: kl_divergence([NAN, 0.5], [0.5, 0.5]),
        "p must not contain NaN",
    ),
    "kl shapes": (
        lambda: kl_divergence([0.5, 0.5], [0.2, 0.3, 0.5]),
        "p and q must have broadcastable shapes",
    ),
}


@pytest.mark.parametrize(
    "call, message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys()
)
def test_bad_input_raises_value_error_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_inputs_may_be_lists_arrays_or_tensors_and_python_floats_are_doubles():
    assert cross_entropy([[1.0, 2.0]], [1]).dtype == torch.float64
    assert (
        cross_entropy(
            np.zeros((2, 3), dtype=np.float32), np.array([0, 2])
        ).dtype
        == torch.float32
    )
    assert binary_cross_entropy_with_logits([0.0], [1]).dtype == torch.float64
    assert distribution_focal_loss([[0.0, 0.0]], [0.5]).dtype == torch.float64
    assert entropy(np.array([0.5, 0.5])).dtype == torch.float64
    assert integral(torch.zeros(3, dtype=torch.float32)).dtype == torch.float32
    assert cross_entropy([[1.0, 2.0]], [1]).item() == pytest.approx(
        math.log1p(math.exp(-1.0)), rel=1e-15
    )


def test_labels_of_the_logit_form_are_not_range_checked_like_torch():
    loss = binary_cross_entropy_with_logits(
        torch.tensor([1.0]), torch.tensor([1.5])
    )
    torch.testing.assert_close(
        loss,
        torch.nn.functional.binary_cross_entropy_with_logits(
            torch.tensor([1.0]), torch.tensor([1.5])
        ),
    )
