"""Stock scoring networks and their LightningModule: MIGA, its ablations, and same-backbone baselines.

Every network reads one day's cross-section ``x[S, L, F]`` (S stocks, L days of features) and returns one
score per stock. All of them share :class:`SequenceEncoder` (a 2-layer GRU), so the rows of a board differ only
in what sits on top of it:

* ``gru``: a linear head (the dense twin of the MoE rows);
* ``moe``: a plain top-k MoE layer from ``zoo.moe`` (router + FFN experts, Switch balance loss), no groups;
* ``miga``: MIGA (Yu et al. 2024): ``G`` groups × ``E`` experts. The router (a ``zoo.moe`` top-k router over
  the G·E experts, with MIGA's balance loss ω·N·Σ p̄², i.e. ``importance_coef``) picks k experts per stock;
  every expert of the bank runs (``FFNExperts`` with all ids); inner-group attention (IGA) lets each expert's
  output attend to the other experts of its group (multi-head self-attention over the E members, residual +
  LayerNorm); a shared linear head turns each expert output into a score and the router weights combine the
  chosen ones. ``iga=False`` is the "without IGA" ablation; ``oracle=True`` replaces the router by the true
  style (group g = the stock's style, its E experts weighted equally): the upper bound on a panel whose styles
  are known.

The loss is MIGA's: −IC of the day (Pearson correlation of scores and labels across the day's stocks) plus the
routers' auxiliary losses. Scores are only compared within a day, so no output normalisation is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric, MetricCollection

from zoo.errors import check_arg
from zoo.kernels import weighted_sum
from zoo.module import ModelOutput, StepOutput, ZooModule
from zoo.moe import FFNExperts, MoEConfig, MoELayer, TopKRouter, routing_stats
from zoo.optim import OptimConfig

from .baselines import TabularBaseline
from .config import StocksConfig
from .data import DayBatch


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Correlation of two vectors over their finite pairs; 0 when fewer than 2 pairs or a constant side."""
    ok = torch.isfinite(a) & torch.isfinite(b)
    a, b = a[ok], b[ok]
    if a.numel() < 2:
        return a.new_zeros(())
    a, b = a - a.mean(), b - b.mean()
    denom = a.norm() * b.norm()
    return (a * b).sum() / denom if denom > 0 else a.new_zeros(())


def ranks(v: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share their mean rank), for Spearman's correlation."""
    order = torch.argsort(v)
    r = torch.empty_like(v)
    r[order] = torch.arange(v.numel(), dtype=v.dtype, device=v.device)
    uniq, inverse = torch.unique(v, return_inverse=True)
    if uniq.numel() < v.numel():
        sums = torch.zeros_like(uniq).index_add_(0, inverse, r)
        counts = torch.zeros_like(uniq).index_add_(0, inverse, torch.ones_like(r))
        r = (sums / counts)[inverse]
    return r


class DailyIC(Metric):
    """Mean over days of the per-day IC (Pearson) or RankIC (Spearman); one ``update`` = one day."""

    full_state_update = False

    def __init__(self, rank: bool = False) -> None:
        super().__init__()
        self.rank = rank
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("days", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        ok = torch.isfinite(target) & torch.isfinite(preds)
        p, t = preds[ok].double(), target[ok].double()
        if p.numel() < 2 or p.std() == 0 or t.std() == 0:
            return
        if self.rank:
            p, t = ranks(p), ranks(t)
        self.total += pearson(p, t)
        self.days += 1

    def compute(self) -> torch.Tensor:
        return self.total / self.days.clamp_min(1)


class SequenceEncoder(nn.Module):
    """A 2-layer GRU over each stock's feature window; its last hidden state represents the stock."""

    def __init__(self, num_features: int, hidden: int, num_layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.gru = nn.GRU(num_features, hidden, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, x_SLF: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x_SLF)
        return out[:, -1]


class GRUScorer(nn.Module):
    """The dense twin: encoder + linear head."""

    def __init__(self, num_features: int, hidden: int, num_layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = SequenceEncoder(num_features, hidden, num_layers, dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x_SLF: torch.Tensor, group_S: torch.Tensor | None = None) -> ModelOutput:
        return ModelOutput(self.head(self.encoder(x_SLF)).squeeze(-1))


class MoEScorer(nn.Module):
    """Encoder + a plain ``zoo.moe`` MoE layer (residual) + linear head: the top-k MoE without groups."""

    def __init__(self, num_features: int, hidden: int, moe: MoEConfig, num_layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = SequenceEncoder(num_features, hidden, num_layers, dropout)
        self.moe = MoELayer.from_config(moe, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x_SLF: torch.Tensor, group_S: torch.Tensor | None = None) -> ModelOutput:
        h = self.encoder(x_SLF)
        out = self.moe(h)
        pred = self.head(h + out.y).squeeze(-1)
        return ModelOutput(pred, {f"moe/{k}": v for k, v in out.aux.items()}, {"moe": out.stats},
                           {"cluster": out.routing.ids[:, 0]})


class MIGA(nn.Module):
    """MIGA: grouped experts with inner-group attention (see the module docstring).

    Args:
        groups, experts_per_group: G and E; the bank has G·E experts.
        k: experts chosen per stock by the router.
        balance: ω of MIGA's balance loss ω·N·Σ_j p̄_j² (``importance_coef``; 2e-3 in the reference code).
        iga: inner-group attention on (MIGA) or off (the ablation).
        oracle: route by the true group (``group_S``) instead of the router.
    """

    def __init__(
        self,
        num_features: int,
        hidden: int,
        *,
        groups: int = 4,
        experts_per_group: int = 4,
        k: int = 2,
        d_expert: int = 64,
        heads: int = 4,
        balance: float = 2e-3,
        iga: bool = True,
        oracle: bool = False,
        num_layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_arg(groups >= 1 and experts_per_group >= 1, "groups × experts_per_group", (groups, experts_per_group), "positive ints")
        check_arg(hidden % heads == 0, "model.hidden", hidden, f"a multiple of model.heads={heads}")
        self.G, self.E, self.iga_on, self.oracle = groups, experts_per_group, iga, oracle
        n = groups * experts_per_group
        self.encoder = SequenceEncoder(num_features, hidden, num_layers, dropout)
        self.router = TopKRouter(hidden, n, k=k, balance_coef=0.0, importance_coef=balance)
        self.experts = FFNExperts(n, hidden, d_expert)
        self.iga = nn.MultiheadAttention(hidden, heads, batch_first=True) if iga else None
        self.norm = nn.LayerNorm(hidden) if iga else None
        self.head = nn.Linear(hidden, 1)

    def expert_outputs(self, h_SH: torch.Tensor) -> torch.Tensor:
        """Every expert's output for every stock, ``[S, G·E, H]``, after inner-group attention."""
        S, n = h_SH.shape[0], self.G * self.E
        ids = torch.arange(n, device=h_SH.device).expand(S, n)
        out = self.experts(h_SH, ids, None)  # the FFN kernel with all ids: the dense pass IGA needs
        if self.iga is None:
            return out
        grouped = out.reshape(S * self.G, self.E, -1)
        attended, _ = self.iga(grouped, grouped, grouped, need_weights=False)
        return self.norm(grouped + attended).reshape(S, n, -1)

    def forward(self, x_SLF: torch.Tensor, group_S: torch.Tensor | None = None) -> ModelOutput:
        h = self.encoder(x_SLF)
        routing = self.router(h)
        scores_SN = self.head(self.expert_outputs(h)).squeeze(-1)
        n = scores_SN.shape[1]
        if self.oracle:
            check_arg(group_S is not None and bool((group_S >= 0).all()), "group", None,
                      "true style labels for every stock (oracle routing needs a panel with known styles)")
            check_arg(int(group_S.max()) < self.G, "model.groups", self.G, f"> the largest style id {int(group_S.max())}")
            ids = group_S[:, None] * self.E + torch.arange(self.E, device=h.device)  # the style's group, equal weights
            weights = torch.full(ids.shape, 1.0 / self.E, device=h.device)
            chosen = group_S
        else:
            ids, weights = routing.ids, routing.weights
            chosen = torch.div(ids[:, 0], self.E, rounding_mode="floor")  # the group of the first expert
        # the zoo's deterministic combine over the k chosen experts' scores
        pred = weighted_sum(scores_SN.gather(1, ids).unsqueeze(-1), weights, scores_SN.dtype).squeeze(-1)
        stats = routing_stats(routing.ids, routing.logits, routing.ids, n)
        aux = {} if self.oracle else {f"router/{k}": v for k, v in routing.aux.items()}
        return ModelOutput(pred, aux, {"router": stats}, {"cluster": chosen})


class StocksModule(ZooModule):
    """One day per step: loss = −IC of the day's scores (+ the model's aux losses); IC and RankIC logged per
    stage as the mean over days.

    The epoch with the best validation IC is kept (``ZooModule.selection_score``; Qlib's models keep their best
    validation epoch the same way): on a few hundred days these models overfit within a few epochs.
    """

    def __init__(self, model: nn.Module, optim: OptimConfig | None = None) -> None:
        super().__init__(model, optim=optim, metrics=MetricCollection({"ic": DailyIC(), "rank_ic": DailyIC(rank=True)}))

    def selection_score(self) -> float | None:
        return None if self.val_metrics is None else float(self.val_metrics["ic"].compute())

    @property
    def best_ic(self) -> float | None:
        return self.best_score

    def step(self, batch: DayBatch) -> StepOutput:
        out: ModelOutput = self.model(batch.x, batch.group)
        loss = -pearson(out.pred, batch.y)
        return StepOutput(loss, out.pred.detach(), batch.y, out.aux, out.stats, batch_size=1)

    @torch.no_grad()
    def score(self, batch: DayBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of a day's stocks and their routing cluster: MIGA's group of the first chosen expert, the plain
        MoE's first expert (−1 for models without routing)."""
        self.model.eval()
        out: ModelOutput = self.model(batch.x, batch.group)
        cluster = out.extras.get("cluster")
        return out.pred, cluster if cluster is not None else torch.full_like(batch.inst, -1)


def build_network(cfg: StocksConfig, num_features: int) -> nn.Module:
    """The network (or tabular baseline) named by ``model.arch`` for ``num_features`` features per day."""
    m, F = cfg.model, num_features
    if m.arch == "gru":
        return GRUScorer(F, m.hidden, m.num_layers, m.dropout)
    if m.arch == "moe":
        return MoEScorer(F, m.hidden, cfg.moe, m.num_layers, m.dropout)
    if m.arch == "miga":
        return MIGA(F, m.hidden, groups=m.groups, experts_per_group=m.experts_per_group, k=m.k, d_expert=m.d_expert,
                    heads=m.heads, balance=m.balance, iga=m.iga, oracle=m.oracle, num_layers=m.num_layers,
                    dropout=m.dropout)
    return TabularBaseline(m.arch, cfg.seed, m.sklearn)


def build_module(cfg: StocksConfig, info: Mapping[str, Any]) -> StocksModule:
    """The LightningModule of ``cfg``, sized by the model info's ``num_features`` (``StockDataModule.model_info``)."""
    return StocksModule(build_network(cfg, int(info["num_features"])), cfg.optim)
