"""Sigmoid focal loss (Lin et al. 2017) (chapter 5, ``chapters/05-cross-entropy-in-practice.ipynb``)."""

from __future__ import annotations


def sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0, reduction="mean"):
    raise NotImplementedError("sigmoid_focal_loss: to be written (issue 12)")
