"""Calibration: reliability bins, the expected calibration error and
temperature scaling (Guo et al. 2017) (chapter 5,
``05-cross-entropy-in-practice``)."""

from __future__ import annotations

import torch
from torch import Tensor

from ce_lib import _checks
from ce_lib._checks import TensorLike


def _probabilities_and_labels(
    probs: TensorLike, target: TensorLike
) -> tuple[Tensor, Tensor]:
    """probs as an (N, C) tensor (a binary (N,) becomes rows (p_0, p_1)),
    target as int64 class indices, both checked."""
    p = _checks.as_float_tensor(probs, "probs")
    t = _checks.as_tensor(target, like=p)
    if p.dim() == 1:
        p = torch.stack([1 - p, p], dim=1)  # binary: (p_0, p_1) per sample
    elif p.dim() != 2 or p.shape[1] < 2:
        raise ValueError(
            "probs must have shape (N, C) with C >= 2, or (N,) for the "
            f"probability of class 1; got {tuple(p.shape)}"
        )
    N, C = p.shape
    if t.shape != (N,):
        raise ValueError(
            f"target must have shape (N,) = ({N},), one class index per "
            f"row of probs; got {tuple(t.shape)}"
        )
    if _checks.validation_enabled():
        if N == 0:
            raise ValueError("probs is empty: there is nothing to bin")
        _checks.check_range(p, "probs", 0.0, 1.0)
        _checks.check_rows_sum_to_one(p, "probs")
        t = _checks.check_class_indices(t, C, "target")
    return p, t.long()


def _check_n_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1; got {n_bins!r}")


def reliability_bins(
    probs: TensorLike, target: TensorLike, n_bins: int = 15
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Top-label confidence and accuracy in equal-width confidence bins.

    Each sample's confidence is its largest probability,
    :math:`\max_c p_{n,c}`, and it is correct when that class,
    :math:`\hat c_n` (the first one, on a tie), is its label. Bin
    :math:`m = 1, \dots, M` holds the samples with confidence in
    :math:`((m-1)/M, m/M]` (edges rounded to float64; a confidence of 0
    goes to the first bin), and for each bin

    .. math::
        \begin{aligned}
        \operatorname{conf}(B_m) &= \frac{1}{|B_m|} \sum_{n \in B_m}
            \max_c p_{n,c}, \\
        \operatorname{acc}(B_m) &= \frac{1}{|B_m|} \sum_{n \in B_m}
            [\hat c_n = y_n],
        \end{aligned}

    the two coordinates of a dot of a reliability diagram, and
    :math:`|B_m|`, its weight in the expected calibration error
    (:func:`~ce_lib.expected_calibration_error`).

    Args:
        probs: shape ``(N, C)``, each row a distribution over the ``C``
            classes (class axis 1); or shape ``(N,)``, the probability of
            class 1 of a binary problem, read as rows :math:`(1-p, p)`.
        target: class indices, shape ``(N,)``, in ``[0, C)`` (0 or 1 for
            the binary form); integer, boolean or whole-number floats.
        n_bins: :math:`M \ge 1`.

    Returns:
        ``(confidence, accuracy, count)``, each of shape ``(M,)``:
        :math:`\operatorname{conf}(B_m)`, :math:`\operatorname{acc}(B_m)`
        (NaN for an empty bin) and :math:`|B_m|`, in float64, detached.

    Edge cases: the checks and errors of
    :func:`~ce_lib.expected_calibration_error`, whose bins these are.
    Chapter 5, ``05-cross-entropy-in-practice``, draws its reliability
    diagrams from them, with the count of each bin.

    Examples:
        >>> from ce_lib import reliability_bins
        >>> p1, y = [0.95, 0.85, 0.25], [1, 0, 0]  # confidences .95 .85 .75
        >>> conf, acc, count = reliability_bins(p1, y, n_bins=2)
        >>> [[round(v, 4) for v in t.tolist()] for t in (conf, acc, count)]
        [[nan, 0.85], [nan, 0.6667], [0.0, 3.0]]
    """
    _check_n_bins(n_bins)
    p, t = _probabilities_and_labels(probs, target)
    sums = _bin_sums(p, t, n_bins)
    count, confidence_sum, correct_sum = sums.detach().unbind(0)
    return confidence_sum / count, correct_sum / count, count


def _bin_sums(p: Tensor, t: Tensor, n_bins: int) -> Tensor:
    """Per bin: the count, the sum of confidences and the number correct,
    stacked into a (3, M) float64 tensor (differentiable in p)."""
    confidence, predicted = p.max(dim=1)  # top label (first on ties)
    confidence = confidence.to(torch.float64)
    correct = (predicted == t).to(torch.float64)
    edges = torch.arange(n_bins + 1, dtype=torch.float64, device=p.device)
    edges = edges / n_bins  # m / M, correctly rounded
    # bucketize gives m with edges[m-1] < confidence <= edges[m]
    m = torch.bucketize(confidence.detach(), edges).clamp(1, n_bins)
    per_sample = torch.stack(
        [torch.ones_like(confidence), confidence, correct], dim=0
    )
    sums = torch.zeros(3, n_bins, dtype=torch.float64, device=p.device)
    return sums.index_add(1, m - 1, per_sample)


def expected_calibration_error(
    probs: TensorLike, target: TensorLike, n_bins: int = 15
) -> Tensor:
    r"""Top-label expected calibration error (ECE) of Guo et al. (2017).

    With :math:`M` equal-width bins :math:`B_m` of the top-label
    confidence (see :func:`~ce_lib.reliability_bins`), over
    :math:`N` samples:

    .. math::
        \begin{aligned}
        \mathrm{ECE} &= \sum_{m=1}^{M} \frac{|B_m|}{N}
            \bigl|\operatorname{acc}(B_m) - \operatorname{conf}(B_m)\bigr| \\
        &= \frac{1}{N} \sum_{m=1}^{M}
            \Bigl|\sum_{n \in B_m} \bigl([\hat c_n = y_n]
            - \max_c p_{n,c}\bigr)\Bigr|
        \end{aligned}

    where :math:`\hat c_n` is the class of the largest probability. Empty
    bins contribute 0; ECE lies in [0, 1] and is 0 for a model whose
    confidence matches its accuracy in every bin.

    Args:
        probs: shape ``(N, C)``, rows that sum to 1 (class axis 1); or
            shape ``(N,)``, the probability of class 1 of a binary
            problem (then the confidence is :math:`\max(p, 1 - p)`).
        target: class indices, shape ``(N,)``, in ``[0, C)``.
        n_bins: :math:`M \ge 1` (15 as in Guo et al.).

    Returns:
        A 0-d tensor in ``probs``' floating dtype (float16 and bfloat16
        give float32; the sums are taken in float64). It is differentiable
        in ``probs`` (the bins are held fixed), though rarely trained on.

    Edge cases: ``n_bins`` < 1 or not an int, ``probs`` outside [0, 1],
    NaN, rows that do not sum to 1 (to 1e-3, or ``C`` times the dtype's
    epsilon if larger), a wrong shape, an empty batch and a ``target``
    that is not a class index raise :class:`ValueError`. A confidence on
    an edge :math:`m/M` belongs to bin :math:`m`: in float32, 0.8 is a
    little above 8/10 and falls in the next bin. Inside
    ``ce_lib.validation(False)`` the data checks are skipped and nothing
    syncs with the device. Chapter 5,
    ``05-cross-entropy-in-practice``, draws the reliability
    diagrams; chapter 3 introduces calibration.

    Examples:
        >>> from ce_lib import expected_calibration_error
        >>> probs = [[0.95, 0.05], [0.25, 0.75], [0.35, 0.65]]
        >>> round(expected_calibration_error(probs, [0, 1, 0], 10).item(), 4)
        0.3167
        >>> (0.05 + 0.25 + 0.65) / 3  # three bins, one sample each
        0.31666666666666665
        >>> round(expected_calibration_error([0.25, 0.75], [0, 1]).item(), 4)
        0.25
    """
    _check_n_bins(n_bins)
    p, t = _probabilities_and_labels(probs, target)
    sums = _bin_sums(p, t, n_bins)
    count, confidence_sum, correct_sum = sums.unbind(0)
    ece = (correct_sum - confidence_sum).abs().sum() / count.sum()
    return ece.to(_checks.compute_dtype(p.dtype))


def _logits_and_labels(
    logits: TensorLike, target: TensorLike
) -> tuple[Tensor, Tensor]:
    """float64 (N, C) logits (a binary (N,) becomes rows (0, z)) and int64
    class indices, checked."""
    z = _checks.as_float_tensor(logits, "logits").detach()
    z = z.to(torch.float64)
    t = _checks.as_tensor(target, like=z)
    if z.dim() == 1:
        z = torch.stack([torch.zeros_like(z), z], dim=1)  # sigmoid = softmax
    elif z.dim() != 2 or z.shape[1] < 2:
        raise ValueError(
            "logits must have shape (N, C) with C >= 2, or (N,) for the "
            f"logit of class 1; got {tuple(z.shape)}"
        )
    N, C = z.shape
    if t.shape != (N,):
        raise ValueError(
            f"target must have shape (N,) = ({N},), one class index per "
            f"row of logits; got {tuple(t.shape)}"
        )
    if N == 0:
        raise ValueError("logits is empty: there is no data to fit T on")
    _checks.check_finite(z, "logits")
    return z, _checks.check_class_indices(t, C, "target")


def fit_temperature(logits: TensorLike, target: TensorLike) -> float:
    r"""The temperature :math:`T > 0` that minimises the held-out NLL.

    Temperature scaling (Guo et al. 2017) divides a trained model's logits
    by one number :math:`T`, fitted on held-out data; it changes the
    confidence but never the predicted class. This returns

    .. math::
        T^\ast = \arg\min_{T > 0}\; -\frac{1}{N} \sum_{n=1}^{N}
            \log \operatorname{softmax}(z_n / T)_{y_n}.

    In :math:`\beta = 1/T` the NLL is convex, with slope
    :math:`\frac1N \sum_n (\mathbb{E}_{p_n}[z_n] - z_{n,y_n})` and
    curvature :math:`\frac1N \sum_n \operatorname{Var}_{p_n}(z_n)`, where
    :math:`p_n = \operatorname{softmax}(\beta z_n)`. So the minimiser is
    the one root of the slope, found in float64 by Newton's method kept
    inside a bisection bracket: deterministic, and exact to rounding
    (about 1e-15 relative), in a handful of passes over the data.

    Args:
        logits: :math:`z`, shape ``(N, C)`` (class axis 1), or ``(N,)``
            for the logit of class 1 of a binary problem (then
            :math:`\sigma(z / T)` is calibrated, the same as the softmax of
            the rows :math:`(0, z)`).
        target: class indices, shape ``(N,)``, in ``[0, C)`` (0 or 1 for
            the binary form).

    Returns:
        :math:`T^\ast` as a Python float. ``logits / T`` is then the
        calibrated model's logits.

    Edge cases: if every sample's true class already has the largest
    logit, the NLL keeps falling as :math:`T \to 0`; if the logits are no
    better than uniform on average (the mean logit of the true class is
    not above the mean of all logits), it keeps falling as
    :math:`T \to \infty`. There is no minimiser then, and a
    :class:`ValueError` says which. So do non-finite logits, an empty
    batch, wrong shapes and targets that are not class indices. The
    function reads its data on the host (it returns a float), so it runs
    the same checks inside ``ce_lib.validation(False)``. Chapter 5,
    ``05-cross-entropy-in-practice``, uses it on real data.

    Examples:
        >>> import torch
        >>> from ce_lib import fit_temperature
        >>> gen = torch.Generator().manual_seed(0)
        >>> z = 2 * torch.randn(20000, 5, generator=gen, dtype=torch.float64)
        >>> y = torch.multinomial(z.softmax(1), 1, generator=gen)[:, 0]
        >>> round(fit_temperature(3 * z, y), 1)  # logits 3 times too sharp
        3.0
    """
    z, t = _logits_and_labels(logits, target)
    z_true = z.gather(1, t[:, None])[:, 0]

    def slope_and_curvature(beta: float) -> tuple[float, float]:
        p = torch.softmax(beta * z, dim=1)
        mean_z = (p * z).sum(dim=1)
        slope = (mean_z - z_true).mean()
        curvature = (p * (z - mean_z[:, None]) ** 2).sum(dim=1).mean()
        return float(slope), float(curvature)

    if not float((z.mean(dim=1) - z_true).mean()) < 0:  # slope at beta = 0
        raise ValueError(
            "logits: the NLL keeps falling as T grows to infinity (the true "
            "class's logit is on average no higher than the mean logit), so "
            "no finite temperature minimises it"
        )
    if not float((z.amax(dim=1) - z_true).mean()) > 0:  # slope as beta->inf
        raise ValueError(
            "logits: every sample's true class has the largest logit, so "
            "the NLL keeps falling as T goes to 0 and no temperature "
            "minimises it; fit T on held-out data the model sometimes gets "
            "wrong"
        )
    lo, hi = 0.0, 1.0  # slope(lo) < 0; double hi until slope(hi) > 0
    while slope_and_curvature(hi)[0] <= 0:
        lo, hi = hi, 2 * hi
    beta = hi
    for _ in range(100):  # Newton on the slope, kept inside (lo, hi)
        slope, curvature = slope_and_curvature(beta)
        if slope == 0:
            break
        lo, hi = (beta, hi) if slope < 0 else (lo, beta)
        step = slope / curvature if curvature > 0 else beta
        if abs(step) <= 1e-15 * beta:  # converged to rounding
            break
        new = beta - step
        beta = new if lo < new < hi else 0.5 * (lo + hi)
        if hi - lo <= 1e-15 * hi:
            break
    return 1.0 / beta
