"""Networks of the video_anomaly task: per-snippet anomaly scores in (0, 1) from snippet features ``x[B, T, D]``
under a validity mask, for the rows of ``ModelConfig.arch``.

- ``sultani``: a per-snippet MLP (Sultani et al., CVPR 2018).
- ``rtfm``: RTFM-lite (Tian et al., ICCV 2021): a masked dilated temporal conv embedding, its feature magnitudes
  and a score head.
- ``urdmu``: UR-DMU-lite (Zhou et al., AAAI 2023): one masked transformer block, then a normal and an abnormal
  memory read per snippet; the score head reads the snippet and both read-outs. UR-DMU's VAE and its KL and
  distance losses are left out.
- ``dense``, ``experts``, ``gsmoe``: a UR-DMU-lite backbone (stage 1, its own loss and score ``coarse``), then
  on its snippet embeddings either one wide scorer (``dense``, as wide as all experts together) or ``E`` class
  experts held in a ``zoo.moe.ModuleExperts`` bank and a fusion (GS-MoE, D'Amicantonio, Majhi et al., ICCV 2025).
  ``gsmoe`` always fuses with the cross-attention gate, ``experts`` with ``model.fusion``.

Zoo choices of the expert rows: an expert is an MLP over a window of five backbone embeddings ``h[t-2..t+2]``
(zeros past a video's edges) instead of the paper's per-expert transformer block: the temporal transformer is the
shared backbone's. The two stages train together but stay separate: experts, the dense scorer and the gate read
the backbone embeddings detached, so the backbone learns from its stage-1 loss only; the gate also reads the expert
scores detached, so each expert learns only from its own class (and normal videos) and masking expert ``c``
takes class ``c``'s evidence out of the fusion. Every temporal operation is masked: padded snippets never change
the output on real ones.

Zoo choice of every row: with ``model.center`` (the default) each network first subtracts from every snippet the
per-feature median of its video's real snippets (:func:`center_videos`), a label-free per-video input op. Normal
and abnormal videos share scenes, so a snippet's raw features mostly say which scene it is from; centring leaves
what the snippet adds to its video, the same op at training (on the resampled segments) and test time (on all
snippets). The median, not the mean: an event covering a third of a video moves its mean, so after subtracting
the mean every normal snippet of an abnormal video is displaced against the event, a cue the gate learned to
score (inverted AUC on the clips board); the median stays with the normal majority.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import check_arg
from zoo.moe import ModuleExperts, routing_stats

from .config import ModelConfig

WINDOW_RADIUS = 2  # an expert reads h[t-2..t+2]
RTFM_DILATIONS = (1, 2, 4)


@dataclass
class VADOutput:
    """What every video anomaly network returns.

    Args:
        scores: ``[B, T]`` final snippet scores in (0, 1); padded positions hold arbitrary finite values.
        expert_scores: ``[B, T, E]`` per-expert scores (``experts``, ``gsmoe``); a masked expert's, and every
            expert's at padded positions, are 0.
        coarse: ``[B, T]`` score of the UR-DMU-lite backbone (stage 1) for ``urdmu`` (its final score), ``dense``,
            ``experts`` and ``gsmoe``.
        extras: what the losses read: ``magnitude`` ``[B, T]`` (rtfm), ``embedding`` ``[B, T, H]`` (rtfm and the
            UR-DMU-lite rows), ``abnormal_memory``/``normal_memory`` ``[B, T]`` memory scores and ``expert_keep``
            ``[E]`` bool (expert rows).
        aux: already weighted auxiliary losses (none of these networks has one).
        stats: ``{"experts": ExpertStats}`` of the dense dispatch for the expert rows.
    """

    scores: torch.Tensor
    expert_scores: torch.Tensor | None = None
    coarse: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


def uses_gate(model: ModelConfig) -> bool:
    """Whether the network of ``model`` fuses its experts with the learned gate."""
    return model.arch == "gsmoe" or (model.arch == "experts" and model.fusion == "gate")


def center_videos(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x[B, T, D]`` minus the per-feature median of each video's real snippets (the lower one of an even count);
    padded snippets are zeroed.

    Args:
        x: ``[B, T, D]`` snippet features.
        mask: ``[B, T]`` bool, True on real snippets.
    """
    m = mask.unsqueeze(-1)
    median = torch.nanmedian(torch.where(m, x, torch.full_like(x, float("nan"))), dim=1, keepdim=True).values
    return torch.where(m, x - median.nan_to_num(0.0), torch.zeros_like(x))


def _input(x: torch.Tensor, mask: torch.Tensor, center: bool) -> torch.Tensor:
    return center_videos(x, mask) if center else x


def _masked(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``h[B, T, C]`` with padded snippets zeroed."""
    return h * mask.unsqueeze(-1).to(h.dtype)


class Attention(nn.Module):
    """Multi-head attention over the snippets of each video; keys are limited to real snippets.

    Queries, keys and values come from three inputs of width ``dim`` (the same one for self-attention).
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, C = q.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, self.heads, C // self.heads).transpose(1, 2)

        keys = (mask | ~mask.any(1, keepdim=True))[:, None, None, :]  # a video without real snippets attends all
        y = F.scaled_dot_product_attention(split(self.q(q)), split(self.k(k)), split(self.v(v)), attn_mask=keys,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """Pre-norm transformer block: masked self-attention, then a feed-forward layer of width ``2·dim``."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = self.norm1(h)
        h = h + self.drop(self.attn(n, n, n, mask))
        return h + self.drop(self.ffn(self.norm2(h)))


def score_head(width: int, hidden: int, dropout: float) -> nn.Sequential:
    """``width → hidden → 1`` MLP with a sigmoid: a score in (0, 1) per snippet."""
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1), nn.Sigmoid())


class Sultani(nn.Module):
    """Sultani et al.'s per-snippet MLP ``D → hidden → 1`` (ReLU, dropout, sigmoid); no temporal context."""

    def __init__(self, dim: int, hidden: int, dropout: float, center: bool = True) -> None:
        super().__init__()
        self.center = center
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1),
                                 nn.Sigmoid())

    def forward(self, x: torch.Tensor, mask: torch.Tensor, expert_mask: torch.Tensor | None = None) -> VADOutput:
        return VADOutput(self.mlp(_input(x, mask, self.center)).squeeze(-1))


class RTFM(nn.Module):
    """RTFM-lite: ``h = ReLU(W x)``, then residual masked temporal convs (kernel 3, dilations 1, 2, 4: a lite
    version of RTFM's pyramid of dilated convs, without its non-local block); magnitudes ``‖h_t‖₂`` and a score
    head on ``h``."""

    def __init__(self, dim: int, hidden: int, dropout: float, center: bool = True) -> None:
        super().__init__()
        self.center = center
        self.embed = nn.Linear(dim, hidden)
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, 3, padding=d, dilation=d) for d in RTFM_DILATIONS)
        self.drop = nn.Dropout(dropout)
        self.head = score_head(hidden, hidden, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, expert_mask: torch.Tensor | None = None) -> VADOutput:
        h = _masked(F.relu(self.embed(_input(x, mask, self.center))), mask)
        for conv in self.convs:
            h = _masked(h + F.relu(conv(h.transpose(1, 2)).transpose(1, 2)), mask)
        h = self.drop(h)
        return VADOutput(self.head(h).squeeze(-1), extras={"magnitude": h.norm(dim=-1), "embedding": h})


class Memory(nn.Module):
    """``M`` learned slots read by attention: per snippet a read-out ``softmax(h·Mᵀ/√H)·M`` and a memory score,
    the mean of the ``⌊M/16⌋+1`` largest ``sigmoid(h·M_m/√H)`` (UR-DMU's top-k memory score)."""

    def __init__(self, slots: int, dim: int) -> None:
        super().__init__()
        self.slots = nn.Parameter(torch.randn(slots, dim) / math.sqrt(dim))
        self.k = slots // 16 + 1

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sim = h @ self.slots.t() / math.sqrt(h.shape[-1])
        read = torch.softmax(sim, dim=-1) @ self.slots
        return read, torch.sigmoid(sim).topk(self.k, dim=-1).values.mean(-1)


class URDMU(nn.Module):
    """UR-DMU-lite: ``GELU(W x)``, one masked transformer block and a LayerNorm give the embedding ``h``; the
    abnormal and normal memories read it; the score head reads ``[h, read_abnormal, read_normal]``."""

    def __init__(self, dim: int, hidden: int, heads: int, dropout: float, slots: int, center: bool = True) -> None:
        super().__init__()
        self.center = center
        self.embed = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout))
        self.block = Block(hidden, heads, dropout)
        self.norm = nn.LayerNorm(hidden)
        self.abnormal, self.normal = Memory(slots, hidden), Memory(slots, hidden)
        self.head = score_head(3 * hidden, hidden, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, expert_mask: torch.Tensor | None = None) -> VADOutput:
        h = self.norm(self.block(self.embed(_input(x, mask, self.center)), mask))
        read_a, score_a = self.abnormal(h)
        read_n, score_n = self.normal(h)
        scores = self.head(torch.cat([h, read_a, read_n], dim=-1)).squeeze(-1)
        extras = {"embedding": h, "abnormal_memory": score_a, "normal_memory": score_n}
        return VADOutput(scores, coarse=scores, extras=extras)


def temporal_windows(h: torch.Tensor, mask: torch.Tensor, radius: int = WINDOW_RADIUS) -> torch.Tensor:
    """``[B, T, (2r+1)·H]``: per snippet the concatenation of ``h[t-r..t+r]``, zeros past the edges and at padded
    snippets."""
    T = h.shape[1]
    padded = F.pad(_masked(h, mask), (0, 0, radius, radius))
    return torch.cat([padded[:, i:i + T] for i in range(2 * radius + 1)], dim=-1)


def window_scorer(hidden: int, width: int, dropout: float) -> nn.Sequential:
    """An expert (or the dense scorer): MLP ``(2r+1)·hidden → width → 1`` with a sigmoid, so that an empty
    dispatch slot reads as score 0."""
    return score_head((2 * WINDOW_RADIUS + 1) * hidden, width, dropout)


class Gate(nn.Module):
    """GS-MoE's gate: expert scores ``S[B, T, E]`` and backbone embeddings ``h`` in, the final score out.

    The scores are projected to width H (``p``); two masked cross-attentions run both ways, each with a residual:
    ``p + Attn(Q=h, K=h, V=p)`` and ``h + Attn(Q=p, K=p, V=h)``. Their concatenation is merged to width H and
    passes one transformer block; an MLP on the result gives per snippet sigmoid weights ``g[B, T, E]`` of the
    experts. The output is ``1 − Π_e (1 − g_e S_e)``: a noisy-OR of the weighted expert scores, high where any
    weighted expert fires and never above what the experts say.

    Zoo choice: the paper's gate MLP maps the attended features to the score directly; here it weighs the
    expert scores, as an MoE gate combines its experts' outputs. A free score from the features lets the gate
    bypass the experts through the residual path from ``h``: masking one then barely changed the output, and
    with even a 0.1-weighted free score beside the noisy-OR the gate learned on the clips board to rank by that
    score alone, inverted (frame AUC 0.24-0.30 over three seeds against 0.73 for the mean of the same experts).
    Masking expert ``c`` (its score read as 0) takes its factor out of the noisy-OR. A noisy-OR rather than a
    softmax mix, since one anomaly class is one expert's evidence: on SynthVAD a softmax gate trained by MIL on
    the fused score put almost all its weight on one expert. The last layer starts at zero: every expert
    weighted 1/2.
    """

    def __init__(self, num_experts: int, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.project = nn.Linear(num_experts, hidden)
        self.scores_by_features = Attention(hidden, heads, dropout)
        self.features_by_scores = Attention(hidden, heads, dropout)
        self.merge = nn.Linear(2 * hidden, hidden)
        self.block = Block(hidden, heads, dropout)
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_experts))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, expert_scores: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        p = self.project(expert_scores)
        a = p + self.scores_by_features(h, h, p, mask)
        b = h + self.features_by_scores(p, p, h, mask)
        z = self.block(self.merge(torch.cat([a, b], dim=-1)), mask)
        out = self.head(z)
        return 1 - torch.prod(1 - torch.sigmoid(out) * expert_scores, dim=-1)


class ExpertNetwork(nn.Module):
    """UR-DMU-lite backbone + one wide scorer (``dense``) or class experts and a fusion (``experts``, ``gsmoe``).

    The experts live in a ``zoo.moe.ModuleExperts`` bank dispatched densely: every real snippet is sent to every
    kept expert (``weights=None`` returns the per-slot scores ``[N, E, 1]``); a masked expert's id, and every id
    of a padded snippet, is −1, so that slot is empty and scores 0. Fusion ``mean`` averages the kept experts;
    the ``gate`` reads a masked expert's score as 0.

    Args:
        model: the model config (``arch`` one of ``dense``, ``experts``, ``gsmoe``).
        dim: input feature width D.
        num_experts: E; the dense scorer is ``E · expert_hidden`` wide.
    """

    def __init__(self, model: ModelConfig, dim: int, num_experts: int) -> None:
        super().__init__()
        H, p = model.hidden, model.dropout
        self.num_experts = num_experts
        self.backbone = URDMU(dim, H, model.heads, p, model.memory_slots, model.center)
        self.scorer = window_scorer(H, num_experts * model.expert_hidden, p) if model.arch == "dense" else None
        self.experts = None if self.scorer is not None else ModuleExperts(
            [window_scorer(H, model.expert_hidden, p) for _ in range(num_experts)])
        self.gate = Gate(num_experts, H, model.heads, p) if self.experts is not None and uses_gate(model) else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor, expert_mask: torch.Tensor | None = None) -> VADOutput:
        base = self.backbone(x, mask)
        h = base.extras["embedding"].detach()
        windows = temporal_windows(h, mask)
        if self.scorer is not None:
            return VADOutput(self.scorer(windows).squeeze(-1), coarse=base.scores, extras=base.extras)
        E = self.num_experts
        keep = torch.ones(E, dtype=torch.bool, device=x.device) if expert_mask is None else \
            expert_mask.to(device=x.device, dtype=torch.bool)
        check_arg(keep.shape == (E,), "expert_mask.shape", tuple(keep.shape), f"({E},)")
        check_arg(self.gate is not None or bool(keep.any()), "expert_mask", keep.tolist(),
                  "at least one kept expert for the mean fusion")
        B, T, W = windows.shape
        ids = torch.arange(E, device=x.device).expand(B * T, E)
        ids = torch.where(keep[None] & mask.reshape(-1, 1), ids, torch.full_like(ids, -1))
        expert_scores = self.experts(windows.reshape(B * T, W), ids, None).view(B, T, E)
        if self.gate is not None:
            scores = self.gate(expert_scores.detach(), h, mask)
        else:
            scores = expert_scores.sum(-1) / keep.sum()
        real = ids[mask.reshape(-1)]  # dense dispatch: uniform "logits", every kept expert on every real snippet
        stats = {"experts": routing_stats(real, x.new_zeros(real.shape[0], E, dtype=torch.float32), real, E)}
        extras = {**base.extras, "expert_keep": keep}
        return VADOutput(scores, expert_scores=expert_scores, coarse=base.scores, extras=extras, stats=stats)


def build_network(model: ModelConfig, dim: int, num_experts: int) -> nn.Module:
    """The network of ``model.arch`` for features of width ``dim``.

    Args:
        model: the model config.
        dim: input feature width D.
        num_experts: E, the number of experts (class count or ``num_clusters``); read by ``dense`` (its width)
            and the expert rows only.
    """
    check_arg(isinstance(dim, int) and dim >= 1, "dim", dim, "a positive int")
    if model.arch == "sultani":
        return Sultani(dim, model.hidden, model.dropout, model.center)
    if model.arch == "rtfm":
        return RTFM(dim, model.hidden, model.dropout, model.center)
    if model.arch == "urdmu":
        return URDMU(dim, model.hidden, model.heads, model.dropout, model.memory_slots, model.center)
    check_arg(isinstance(num_experts, int) and num_experts >= 1, "num_experts", num_experts,
              f"a positive int for model.arch={model.arch!r}")
    return ExpertNetwork(model, dim, num_experts)

