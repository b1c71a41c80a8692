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

Router warm-up (``model.router_warmup_epochs``): during the first epochs of training (of each search trial),
MIGA's training steps combine every expert's score with the router's full softmax instead of the renormalised
top-k weights: dense-to-sparse gating (as in EvoMoE, Nie et al. 2021). With renormalised top-k routing from the
first step, only the k chosen experts and their router logits get the task loss's gradient, so an early arbitrary
split of the stocks tends to stay; with the dense gate every logit learns from every stock's loss, and the experts see all stocks while
the router forms its partition. MIGA already runs the whole bank (inner-group attention needs it), so the warm-up
costs nothing. Validation and test always route top-k, so the epoch kept is one that scores as it will be used.

A ``search`` block (:mod:`.search`) makes :class:`StocksModule` train several trials in one fit and keep the best
validation epoch over all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from .config import NEURAL_ARCHS, StocksConfig
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
        self.dense_routing = False  # the router warm-up's dense gate, used by training steps only

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
        elif self.dense_routing and self.training:
            ids = torch.arange(n, device=h.device).expand(scores_SN.shape[0], n)
            weights = torch.softmax(routing.logits.float(), dim=-1)
            chosen = torch.div(routing.ids[:, 0], self.E, rounding_mode="floor")
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

    Args:
        model: the scoring network.
        optim: its optimizer config.
        trials: the search's trials (:func:`.search.trial_list`); empty: one plain fit.
        epochs_per_trial: epochs of each trial (the config's ``trainer.max_epochs``); needed with ``trials``.
        router_warmup_epochs: epochs (of each trial) whose training steps use MIGA's dense gate.
    """

    def __init__(self, model: nn.Module, optim: OptimConfig | None = None, *, trials: Sequence[Mapping[str, Any]] = (),
                 epochs_per_trial: int | None = None, router_warmup_epochs: int = 0) -> None:
        super().__init__(model, optim=optim, metrics=MetricCollection({"ic": DailyIC(), "rank_ic": DailyIC(rank=True)}))
        check_arg(not trials or (epochs_per_trial or 0) >= 1, "epochs_per_trial", epochs_per_trial,
                  "a positive int with a search")
        self.trials = [dict(t) for t in trials]
        self.epochs_per_trial = epochs_per_trial
        self.router_warmup_epochs = router_warmup_epochs
        self.trial_best: list[float | None] = [None] * len(self.trials)  # each trial's best validation IC
        self._init_state: dict[str, torch.Tensor] | None = None
        self._started_trial = -1

    def selection_score(self) -> float | None:
        return None if self.val_metrics is None else float(self.val_metrics["ic"].compute())

    @property
    def best_ic(self) -> float | None:
        return self.best_score

    def trial_of(self, epoch: int) -> tuple[int, int]:
        """(trial, epoch within the trial) of a fit epoch; (0, epoch) without a search."""
        return divmod(epoch, self.epochs_per_trial) if self.trials else (0, epoch)

    def on_fit_start(self) -> None:
        if self.trials:
            self.trainer.fit_loop.max_epochs = self.epochs_per_trial * len(self.trials)
            if self._init_state is None:
                self._init_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def on_train_epoch_start(self) -> None:
        trial, epoch = self.trial_of(self.current_epoch)
        warmup = self.router_warmup_epochs
        if self.trials:
            values = self.trials[trial]
            warmup = int(values.get("model.router_warmup_epochs", warmup))
            if trial > self._started_trial:  # a new trial: the same initial weights, a fresh optimizer
                self.model.load_state_dict(self._init_state)
                for optimizer in self.trainer.optimizers:
                    optimizer.state.clear()
                self._started_trial = trial
            apply_trial(self.model, self.trainer.optimizers, values)
        if hasattr(self.model, "dense_routing"):
            self.model.dense_routing = epoch < warmup

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trials and not self.trainer.sanity_checking:
            trial = self.trial_of(self.current_epoch)[0]
            score = self.selection_score()
            if score is not None and (self.trial_best[trial] is None or score > self.trial_best[trial]):
                self.trial_best[trial] = score

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.trials and "optimizer_states" in checkpoint:  # resuming a search needs where it stands
            checkpoint["search"] = {"init": self._init_state, "started": self._started_trial, "best": self.trial_best}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("search")
        if state is not None:
            self._init_state, self._started_trial, self.trial_best = state["init"], state["started"], state["best"]

    def search_metrics(self) -> dict[str, float]:
        """``search/*`` records of a search run: the chosen trial, its values, and every trial's best validation
        IC (``search/trial<i>/val_ic``, NaN for a trial that never validated); empty without a search."""
        if not self.trials or self.best_epoch is None:
            return {}
        chosen = self.trial_of(self.best_epoch)[0]
        out = {"search/trials": float(len(self.trials)), "search/trial": float(chosen)}
        out.update({f"search/{k}": float(v) for k, v in self.trials[chosen].items()})
        for i, best in enumerate(self.trial_best):
            out[f"search/trial{i}/val_ic"] = float("nan") if best is None else float(best)
        return out

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


def apply_trial(model: nn.Module, optimizers: Sequence[torch.optim.Optimizer], values: Mapping[str, Any]) -> None:
    """Set a search trial's values (:data:`.search.SEARCHABLE`) on the network and its optimizers: the learning
    rate of every parameter group, the GRUs' dropout between layers, MIGA's balance weight ω. A key the network
    has no use for (ω of the GRU twin) changes nothing. ``model.router_warmup_epochs`` is read by the module."""
    if "optim.lr" in values:
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = float(values["optim.lr"])
    if "model.dropout" in values:
        for rnn in (m for m in model.modules() if isinstance(m, nn.RNNBase)):
            rnn.dropout = float(values["model.dropout"]) if rnn.num_layers > 1 else 0.0
    if "model.balance" in values and isinstance(model, MIGA):
        model.router.importance_coef = float(values["model.balance"])


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
    """The LightningModule of ``cfg``, sized by the model info's ``num_features`` (``StockDataModule.model_info``),
    with the config's search trials and router warm-up."""
    from .search import trial_list

    trials = trial_list(cfg.search) if cfg.model.arch in NEURAL_ARCHS else []
    return StocksModule(build_network(cfg, int(info["num_features"])), cfg.optim, trials=trials,
                        epochs_per_trial=cfg.trainer.get("max_epochs") if trials else None,
                        router_warmup_epochs=cfg.model.router_warmup_epochs)
