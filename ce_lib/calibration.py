"""Calibration: expected calibration error and temperature scaling (chapter 5,
``chapters/05-cross-entropy-in-practice.ipynb``)."""

from __future__ import annotations


def expected_calibration_error(probs, target, n_bins=15):
    raise NotImplementedError("expected_calibration_error: to be written (issue 12)")


def fit_temperature(logits, target):
    raise NotImplementedError("fit_temperature: to be written (issue 12)")
