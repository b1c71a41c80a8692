"""Local proxy metrics of the audio task, which stand in for the paper's WER/CER, FAD and per-task losses because
the paper's judges (Whisper, Paraformer, openl3) are not available offline: the character error rate of a
transcript against its reference, the Fréchet distance between two sets of embeddings (fitted as Gaussians), and
the teacher-forced token negative log-likelihood, per task. The recogniser and the music classifier that produce
the transcripts and embeddings are in :mod:`zoo.tasks.audio.probes`; the numbers they give are called CER-local
and FD-local and are not comparable with the paper's WER, CER or FAD.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from zoo.errors import check_arg


def cer(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Character error rate of a corpus: (substitutions + deletions + insertions) / reference characters.

    The edit counts are the Levenshtein distances of each pair (torchmetrics' ``char_error_rate``), summed over
    the corpus and divided by the total length of the references, so long references weigh more than short ones.
    Characters are compared as given: normalise case and punctuation before calling.

    Args:
        hyps: the recognised texts.
        refs: the reference texts, as many as ``hyps``, with at least one character in all.

    Returns:
        The error rate, >= 0 (above 1 when the hypotheses insert more than the references hold).
    """
    from torchmetrics.functional.text import char_error_rate

    check_arg(not isinstance(hyps, str), "hyps", hyps, "a list of str, not one str")
    check_arg(not isinstance(refs, str), "refs", refs, "a list of str, not one str")
    check_arg(len(hyps) == len(refs), "len(hyps)", len(hyps), f"as many as refs ({len(refs)})")
    check_arg(all(isinstance(t, str) for t in [*hyps, *refs]), "hyps/refs", "non-str items", "lists of str")
    check_arg(sum(map(len, refs)) > 0, "refs", list(refs)[:3], "references with at least one character in all")
    return float(char_error_rate(list(hyps), list(refs)))


def _as_embeddings(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x), dtype=torch.float64)
    check_arg(t.dim() == 2 and t.shape[0] >= 2 and t.shape[1] >= 1, f"{name}.shape", tuple(t.shape),
              "[N, D] with N >= 2 rows")
    check_arg(bool(torch.isfinite(t).all()), name, "non-finite values", "finite embeddings")
    return t


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues below 0 from rounding become 0)."""
    vals, vecs = torch.linalg.eigh(a)
    return (vecs * vals.clamp_min(0.0).sqrt()) @ vecs.T


def gaussian_frechet_distance(mu_a: torch.Tensor, cov_a: torch.Tensor, mu_b: torch.Tensor,
                              cov_b: torch.Tensor) -> float:
    """Squared Fréchet (2-Wasserstein) distance between two Gaussians.

    ``‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½)``. The trace of the matrix root is taken in the symmetric form
    ``Tr((Σa^½ Σb Σa^½)^½)``, which has the same eigenvalues but is symmetric, so ``eigh`` applies, the result is
    real and no imaginary rounding residue has to be dropped. Computed in float64.

    Args:
        mu_a: mean ``[D]``.
        cov_a: covariance ``[D, D]``, symmetric positive semi-definite.
        mu_b: mean ``[D]``.
        cov_b: covariance ``[D, D]``, symmetric positive semi-definite.

    Returns:
        The distance, >= 0 up to rounding (clamped at 0).
    """
    mu_a, mu_b, cov_a, cov_b = (torch.as_tensor(t, dtype=torch.float64) for t in (mu_a, mu_b, cov_a, cov_b))
    d = mu_a.shape[0]
    check_arg(mu_b.shape == (d,) and cov_a.shape == (d, d) and cov_b.shape == (d, d), "shapes",
              (tuple(mu_a.shape), tuple(cov_a.shape), tuple(mu_b.shape), tuple(cov_b.shape)),
              "[D], [D, D], [D], [D, D]")
    root_a = _sqrtm_psd((cov_a + cov_a.T) / 2)
    middle = root_a @ cov_b @ root_a
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0.0).sqrt().sum()
    value = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2.0 * cross
    return max(float(value), 0.0)


def frechet_distance(emb_a: np.ndarray | torch.Tensor, emb_b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between two sets of embeddings, each fitted as a Gaussian (FD-local, never "FAD").

    The means and the unbiased sample covariances (``N − 1``) of the rows go to :func:`gaussian_frechet_distance`.
    The estimate is biased upwards for small sets (two samples of one distribution give > 0), so compare distances
    computed with the same set sizes.

    Args:
        emb_a: ``[Na, D]`` embeddings, ``Na >= 2``.
        emb_b: ``[Nb, D]`` embeddings of the same width, ``Nb >= 2``.
    """
    a, b = _as_embeddings(emb_a, "emb_a"), _as_embeddings(emb_b, "emb_b")
    check_arg(a.shape[1] == b.shape[1], "emb_b.shape", tuple(b.shape), f"[N, {a.shape[1]}] like emb_a")
    return gaussian_frechet_distance(a.mean(0), torch.cov(a.T).reshape(a.shape[1], -1), b.mean(0),
                                     torch.cov(b.T).reshape(b.shape[1], -1))


def nll_sums(logits: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor, num_groups: int,
             mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed token cross-entropy and token counts per group (e.g. per task), to be accumulated over batches.

    Args:
        logits: ``[B, ..., V]`` scores.
        targets: ``[B, ...]`` token ids in ``[0, V)`` where ``mask`` is true.
        groups: ``[B]`` group id of each sequence, in ``[0, num_groups)``.
        num_groups: number of groups.
        mask: ``[B, ...]`` bool, the tokens that count; all when None.

    Returns:
        ``(nll_sum, count)``, both float64 ``[num_groups]``; ``nll_sum / count`` is the mean NLL in nats.
    """
    check_arg(logits.dim() >= 2 and logits.shape[:-1] == targets.shape, "logits.shape", tuple(logits.shape),
              f"targets.shape + [V] = {tuple(targets.shape)} + [V]")
    check_arg(groups.shape == targets.shape[:1], "groups.shape", tuple(groups.shape), f"[{targets.shape[0]}]")
    if mask is None:
        mask = torch.ones_like(targets, dtype=torch.bool)
    check_arg(mask.shape == targets.shape, "mask.shape", tuple(mask.shape), f"{tuple(targets.shape)} like targets")
    check_arg(num_groups >= 1 and bool(((groups >= 0) & (groups < num_groups)).all()), "groups",
              groups.tolist(), f"ids in [0, {num_groups})")
    safe = torch.where(mask, targets, torch.zeros_like(targets))
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), safe.reshape(-1).long(), reduction="none")
    nll = nll.reshape(targets.shape) * mask
    per_seq = nll.reshape(targets.shape[0], -1).sum(1)
    tokens = mask.reshape(targets.shape[0], -1).sum(1).double()
    index = groups.long().to(per_seq.device)
    zeros = torch.zeros(num_groups, dtype=torch.float64, device=per_seq.device)
    return zeros.index_add(0, index, per_seq), zeros.index_add(0, index, tokens)


def token_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean teacher-forced negative log-likelihood (nats per token) over the tokens of ``mask``.

    Args:
        logits: ``[B, ..., V]`` scores.
        targets: ``[B, ...]`` token ids.
        mask: ``[B, ...]`` bool, the tokens that count; all when None.

    Returns:
        The mean NLL; NaN when no token counts.
    """
    total, count = nll_sums(logits, targets, torch.zeros(targets.shape[0], dtype=torch.long), 1, mask)
    return float(total[0] / count[0]) if count[0] > 0 else float("nan")
