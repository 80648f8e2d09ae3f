"""Vocabulary-parallel cross-entropy over ``torch.distributed`` (chapter 6,
``chapters/06-cross-entropy-at-scale.ipynb``)."""

from __future__ import annotations


def vocab_parallel_cross_entropy(local_logits, target, *, group=None, ignore_index=-100,
                                 reduction="mean", label_smoothing=0.0):
    raise NotImplementedError("vocab_parallel_cross_entropy: to be written (issue 13)")
