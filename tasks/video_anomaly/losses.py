"""Losses of the video_anomaly rows under weak supervision (a label per video), all masked: padded snippets
never count.

- Top-k MIL BCE: ``BCE(mean of the k largest snippet scores, video label)`` with ``k = ⌊T/16⌋+1`` for a video of
  ``T`` real snippets (UR-DMU, GS-MoE).
- ``sultani``: the MIL ranking hinge ``max(0, 1 − max s_abnormal + max s_normal)`` averaged over every (normal,
  abnormal) pair of the batch, so batch order does not matter, plus smoothness and sparsity.
- ``rtfm``: BCE of the mean score of the ``min(3, T)`` snippets of largest feature magnitude, plus the
  magnitude margin ``1e-4 · (mean over abnormal videos of max(0, 100 − m) + mean over normal videos of m)`` with
  ``m`` a video's mean top-k magnitude, plus smoothness and sparsity.
- Smoothness ``Σ_t (s_t − s_{t+1})²`` and sparsity ``Σ_t s_t`` are sums over a video's real snippets, averaged
  over the abnormal videos, weighted by ``model.smooth`` and ``model.sparse`` as given (RTFM's 8e-4 and 8e-3;
  Sultani used 8e-5 for both). Only ``sultani`` and ``rtfm`` use them.
- UR-DMU-lite (``urdmu``, and the backbone of ``dense``/``experts``/``gsmoe`` as ``coarse_mil``): top-k MIL BCE
  + ``0.1 ·`` memory BCE + ``0.1 ·`` triplet. Memory BCE: at each video's top-k snippets (by its score, k as in
  MIL) the mean abnormal-memory score is pushed to the video label and the mean normal-memory score to
  ``1 − label``. Triplet (margin 1, on L2-normalised embeddings): anchor the mean embedding of normal video
  ``i``'s top-k snippets, positive the mean embedding of all snippets of the next normal video of the batch
  (itself when it is the only one), negative the mean embedding of abnormal video ``i mod m``'s top-k snippets.
  UR-DMU's KL and distance terms are left out with its VAE.
- Experts: expert ``c`` is trained on the videos whose ``expert`` is ``c`` and on every normal video, with its
  own top-k MIL BCE (``expert_mil``) and, when TGS is on, TGS on its abnormal videos (``expert_tgs``); each
  expert's mean over its videos, then the mean over the experts that have videos in the batch. The ``dense``
  scorer and the gate take top-k MIL BCE (``mil``) and TGS (``tgs``) on the final score over all videos; the
  ``mean`` fusion has no loss of its own.
- Temporal Gaussian splatting (TGS, GS-MoE): pseudo-labels from a score curve (:func:`tgs_pseudo_labels`) and
  ``BCE(s, ỹ)`` on the abnormal videos, averaged over their real snippets; on when ``model.tgs`` and the epoch
  index (from 0) is at least ``model.mil_only_epochs``. The labels come from the very scores they train, taken
  without gradient.

Every named part is already weighted and the total is their sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.errors import check_arg

from .batch import VADBatch
from .config import EXPERT_ARCHS, ModelConfig
from .models import VADOutput, uses_gate

SIGMA_MIN = 1e-3  # TGS: a peak whose window is flat gets this σ, so only the peak passes the s_t ≥ s_p − σ gate
PEAK_RADIUS = 2  # TGS: a peak is the largest score of s[p-2..p+2]
RTFM_K, RTFM_MARGIN, RTFM_WEIGHT = 3, 100.0, 1e-4
MEMORY_WEIGHT, TRIPLET_WEIGHT, TRIPLET_MARGIN = 0.1, 0.1, 1.0


def mil_k(mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` long: ``k = ⌊T/16⌋+1`` for each video's ``T`` real snippets."""
    return mask.sum(1) // 16 + 1


def _zero(like: torch.Tensor) -> torch.Tensor:
    """A zero that keeps ``like``'s graph, so a batch without a given term still backpropagates."""
    return like.sum() * 0


def topk_mean(values: torch.Tensor, mask: torch.Tensor, k: torch.Tensor, key: torch.Tensor | None = None) -> torch.Tensor:
    """Per video, the mean of ``values`` at the ``k`` real snippets of largest ``key``.

    Args:
        values: ``[B, T, ...]``.
        mask: ``[B, T]`` bool, True on real snippets.
        k: ``[B]`` long, at most each video's number of real snippets.
        key: ``[B, T]`` ranking key (no gradient through the ranking); ``values`` itself when None.

    Returns:
        ``[B, ...]``.
    """
    key = values if key is None else key
    B, T = mask.shape
    ranked = torch.where(mask, key.detach(), torch.full_like(key, -torch.inf))
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    extra = (1,) * (values.dim() - 2)
    picked = values.gather(1, order.view(B, T, *extra).expand_as(values))
    take = (torch.arange(T, device=mask.device)[None] < k[:, None]).view(B, T, *extra)
    return torch.where(take, picked, torch.zeros_like(picked)).sum(1) / k.view(B, *extra).to(values.dtype)


def _video_bce(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy(prob, target.to(prob.dtype), reduction="none")


def topk_mil_bce(scores: torch.Tensor, mask: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Top-k MIL BCE averaged over the videos.

    Args:
        scores: ``[B, T]`` snippet scores in (0, 1).
        mask: ``[B, T]`` bool, True on real snippets (at least one per video).
        label: ``[B]`` video labels, 1 anomalous.
    """
    return _video_bce(topk_mean(scores, mask, mil_k(mask)), label).mean()


@torch.no_grad()
def tgs_pseudo_labels(scores: torch.Tensor, mask: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """Temporal Gaussian splatting pseudo-labels ``ỹ[B, T]`` of score curves (0 at padded snippets).

    Per video over its real snippets ``s[0..T-1]``: a peak is a ``p`` with ``s_p = max s[p-2..p+2]`` and
    ``s_p − min s > threshold``. ``v1``/``v2`` count the steps of the non-increasing runs going left/right from
    ``p``; ``w = max(1, min(v1, v2))``; ``σ`` is the population standard deviation of ``s[p-w..p+w]`` (clipped to
    the video), at least :data:`SIGMA_MIN`. Each peak adds ``exp(−(t−p)²/2σ_t²)`` with ``σ_t = w/2`` snippets
    where ``|t−p| ≤ w`` and ``s_t ≥ s_p − σ``; ``ỹ`` is the sum clamped to [0, 1]. Every snippet of a plateau
    that tops its neighbourhood is a peak; a flat curve has none.

    Zoo choice: the score spread ``σ`` only gates the region (``s_t ≥ s_p − σ``) and the Gaussian's width is in
    snippets, half the peak's run length, so the labels spread over the part of the peak's region where the score
    stays high; ``σ`` itself, in score units, as the width in snippets would make a one-snippet splat.

    Args:
        scores: ``[B, T]`` snippet scores.
        mask: ``[B, T]`` bool, True on real snippets.
        threshold: how far above the video's lowest score a peak must rise.
    """
    valid = mask.bool()
    s = scores.detach().to(torch.promote_types(scores.dtype, torch.float32))
    s = torch.where(valid, s, torch.zeros_like(s))
    T = s.shape[1]
    t = torch.arange(T, device=s.device)
    low = torch.where(valid, s, torch.inf).amin(1, keepdim=True)
    neighbours = F.pad(torch.where(valid, s, -torch.inf), (PEAK_RADIUS, PEAK_RADIUS), value=-torch.inf)
    local_max = neighbours.unfold(1, 2 * PEAK_RADIUS + 1, 1).amax(-1)
    peak = valid & (s >= local_max) & (s - low > threshold)
    # v1[p]: steps from p back to the last t <= p where the curve rises going left (s[t-1] > s[t]) or ends
    step_left = torch.zeros_like(valid)
    step_left[:, 1:] = valid[:, 1:] & valid[:, :-1] & (s[:, :-1] <= s[:, 1:])
    v1 = t - torch.where(step_left, 0, t).cummax(1).values
    step_right = torch.zeros_like(valid)
    step_right[:, :-1] = valid[:, :-1] & valid[:, 1:] & (s[:, 1:] <= s[:, :-1])
    v2 = torch.where(step_right, T, t).flip(1).cummin(1).values.flip(1) - t
    w = torch.minimum(v1, v2).clamp_min(1)
    b, p = peak.nonzero(as_tuple=True)  # one row per peak: O(peaks · T) memory
    rows, row_valid = s[b], valid[b]
    dist = (t[None, :] - p[:, None]).abs()
    window = (dist <= w[b, p][:, None]) & row_valid
    count = window.sum(-1, keepdim=True)
    mean = (window * rows).sum(-1, keepdim=True) / count
    sigma = ((window * (rows - mean) ** 2).sum(-1, keepdim=True) / count).sqrt().clamp_min(SIGMA_MIN)
    keep = window & (rows >= s[b, p][:, None] - sigma)
    width = w[b, p][:, None].to(s.dtype) / 2
    splat = torch.exp(-dist.to(s.dtype) ** 2 / (2 * width**2)) * keep
    labels = torch.zeros_like(s).index_add_(0, b, splat)
    return (labels.clamp(0, 1) * valid).to(scores.dtype)


def tgs_bce(scores: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """``[B]``: per video, ``BCE(s, ỹ)`` averaged over its real snippets (``ỹ`` from :func:`tgs_pseudo_labels`).

    Snippets outside every splat are targets of 0, as the formula reads. Only spreading positives (no target
    outside the splats) was tried too and did worse on SynthVAD (dense row 0.45 against 0.52 AUC, seed 0, measured with mean centring)."""
    target = tgs_pseudo_labels(scores, mask, threshold)
    bce = F.binary_cross_entropy(scores, target, reduction="none")
    return torch.where(mask, bce, torch.zeros_like(bce)).sum(1) / mask.sum(1).clamp_min(1)


def _over(values: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """Mean of ``values[select]``; a graph-keeping zero when nothing is selected."""
    return values[select].mean() if bool(select.any()) else _zero(values)


def smooth_sparse(model: ModelConfig, scores: torch.Tensor, mask: torch.Tensor,
                  label: torch.Tensor) -> dict[str, torch.Tensor]:
    """Weighted smoothness and sparsity of the abnormal videos' score curves (module docstring)."""
    pairs = mask[:, 1:] & mask[:, :-1]
    jumps = torch.where(pairs, (scores[:, 1:] - scores[:, :-1]) ** 2, torch.zeros_like(scores[:, 1:])).sum(1)
    mass = torch.where(mask, scores, torch.zeros_like(scores)).sum(1)
    abnormal = label > 0.5
    return {"smooth": model.smooth * _over(jumps, abnormal), "sparse": model.sparse * _over(mass, abnormal)}


def ranking_hinge(scores: torch.Tensor, mask: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Sultani's MIL ranking hinge averaged over all (normal, abnormal) pairs; zero without a pair."""
    top = torch.where(mask, scores, torch.full_like(scores, -torch.inf)).amax(1)
    normal, abnormal = top[label < 0.5], top[label > 0.5]
    if not normal.numel() or not abnormal.numel():
        return _zero(scores)
    return F.relu(1 - abnormal[:, None] + normal[None, :]).mean()


def _rtfm_terms(out: VADOutput, batch: VADBatch) -> dict[str, torch.Tensor]:
    mask, label = batch.mask, batch.label
    k = mask.sum(1).clamp(max=RTFM_K)
    magnitude = out.extras["magnitude"]
    mil = _video_bce(topk_mean(out.scores, mask, k, key=magnitude), label).mean()
    top_mag = topk_mean(magnitude, mask, k)
    margin = _over(F.relu(RTFM_MARGIN - top_mag), label > 0.5) + _over(top_mag, label < 0.5)
    return {"mil": mil, "margin": RTFM_WEIGHT * margin}


def _triplet(embedding: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, label: torch.Tensor,
             k: torch.Tensor) -> torch.Tensor:
    normal, abnormal = torch.nonzero(label < 0.5).squeeze(1), torch.nonzero(label > 0.5).squeeze(1)
    if not normal.numel() or not abnormal.numel():
        return _zero(embedding)
    emb = F.normalize(embedding, dim=-1)
    top = topk_mean(emb, mask, k, key=scores)
    whole = (emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
    negative = abnormal[torch.arange(normal.numel(), device=label.device) % abnormal.numel()]
    return F.triplet_margin_loss(top[normal], whole[normal.roll(-1)], top[negative], margin=TRIPLET_MARGIN)


def _urdmu_terms(scores: torch.Tensor, extras: dict[str, torch.Tensor], batch: VADBatch,
                 mil_name: str) -> dict[str, torch.Tensor]:
    mask, label = batch.mask, batch.label
    k = mil_k(mask)
    mil = _video_bce(topk_mean(scores, mask, k), label).mean()
    abnormal_memory = topk_mean(extras["abnormal_memory"], mask, k, key=scores)
    normal_memory = topk_mean(extras["normal_memory"], mask, k, key=scores)
    memory = _video_bce(abnormal_memory, label).mean() + _video_bce(normal_memory, 1 - label).mean()
    triplet = _triplet(extras["embedding"], scores, mask, label, k)
    return {mil_name: mil, "memory": MEMORY_WEIGHT * memory, "triplet": TRIPLET_WEIGHT * triplet}


def _final_terms(model: ModelConfig, scores: torch.Tensor, batch: VADBatch, tgs: bool) -> dict[str, torch.Tensor]:
    parts = {"mil": topk_mil_bce(scores, batch.mask, batch.label)}
    if tgs:
        parts["tgs"] = _over(tgs_bce(scores, batch.mask, model.tgs_threshold), batch.label > 0.5)
    return parts


def _expert_terms(model: ModelConfig, out: VADOutput, batch: VADBatch, tgs: bool) -> dict[str, torch.Tensor]:
    S = out.expert_scores
    B, T, E = S.shape
    check_arg(int(batch.expert.max()) < E, "batch.expert", int(batch.expert.max()), f"expert ids below E={E}")
    keep = out.extras.get("expert_keep", torch.ones(E, dtype=torch.bool, device=S.device))
    flat = S.permute(0, 2, 1).reshape(B * E, T)
    flat_mask = batch.mask[:, None, :].expand(B, E, T).reshape(B * E, T)
    labels = batch.label[:, None].expand(B, E)
    ids = torch.arange(E, device=S.device)
    normal = (batch.label < 0.5)[:, None]
    own_abnormal = (batch.expert[:, None] == ids) & ~normal & keep[None]
    own = (own_abnormal | normal) & keep[None]

    def per_expert(values: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
        """Each expert's mean over its selected videos, then the mean over experts with any."""
        counts = select.sum(0)
        if not bool(counts.any()):
            return _zero(values)
        means = torch.where(select, values, torch.zeros_like(values)).sum(0) / counts.clamp_min(1)
        return means[counts > 0].mean()

    mil = _video_bce(topk_mean(flat, flat_mask, mil_k(flat_mask)), labels.reshape(-1)).view(B, E)
    parts = {"expert_mil": per_expert(mil, own)}
    if tgs:
        parts["expert_tgs"] = per_expert(tgs_bce(flat, flat_mask, model.tgs_threshold).view(B, E), own_abnormal)
    return parts


def objective(model: ModelConfig, out: VADOutput, batch: VADBatch,
              epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss of ``model.arch`` and its weighted parts (module docstring).

    Args:
        model: the model config the network was built from.
        out: the network's output on ``batch``.
        batch: the videos, with their labels and expert ids.
        epoch: the current epoch index, from 0 (TGS starts at ``model.mil_only_epochs``).

    Returns:
        The total (the sum of the parts) and the parts by name: ``ranking``, ``mil``, ``margin``, ``smooth``,
        ``sparse``, ``memory``, ``triplet``, ``coarse_mil``, ``tgs``, ``expert_mil``, ``expert_tgs`` as the row
        uses them.
    """
    tgs = model.tgs and epoch >= model.mil_only_epochs
    if model.arch == "sultani":
        parts = {"ranking": ranking_hinge(out.scores, batch.mask, batch.label),
                 **smooth_sparse(model, out.scores, batch.mask, batch.label)}
    elif model.arch == "rtfm":
        parts = {**_rtfm_terms(out, batch), **smooth_sparse(model, out.scores, batch.mask, batch.label)}
    elif model.arch == "urdmu":
        parts = _urdmu_terms(out.scores, out.extras, batch, "mil")
    else:
        parts = _urdmu_terms(out.coarse, out.extras, batch, "coarse_mil")
        if model.arch in EXPERT_ARCHS:
            parts.update(_expert_terms(model, out, batch, tgs))
        if model.arch == "dense" or uses_gate(model):
            parts.update(_final_terms(model, out.scores, batch, tgs))
    return torch.stack(list(parts.values())).sum(), parts
