"""Chunked linear cross-entropy: the output layer and the loss without all the logits (chapter 6,
``chapters/06-cross-entropy-at-scale.ipynb``)."""

from __future__ import annotations


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, ignore_index=-100,
                         reduction="mean", label_smoothing=0.0, chunk_size=None):
    raise NotImplementedError("linear_cross_entropy: to be written (issue 13)")
