"""Multi-task and behaviour-gated recommendation models, built from ``zoo.moe`` parts.

Every model reads the same batch dict and embeds it with the same :class:`FeatureEmbedding`, so the rows of a
board differ only in what sits on top of the inputs:

* ``sparse[B, F]`` integer feature ids, one embedding table per field (vocab sizes given at construction);
* ``dense[B, Dd]`` optional float features, used as they are;
* ``item[B]`` optional target item id and ``hist[B, L]`` its user's behaviour history (item ids, 0 = padding),
  embedded with one shared item table. Models without target attention see the masked mean of the history.

and returns a :class:`RecsysOutput`: ``logits[B, T]`` (one per binary task; the synthetic regression board reads
them as predictions), named auxiliary losses, routing statistics, and :class:`Diagnostics` (every gate's weights,
every expert's activations) for the collapse metrics of ``metrics.py``: zero-activation ratio and min shared usage.

Models (``build_model`` names):

* ``shared_bottom``: one MLP bottom + T towers; the dense twin, its width matched to the total parameters of the
  MMoE it is compared with.
* ``mmoe`` (Ma et al., KDD 2018): E experts, one softmax gate per task (``one_gate=True``: the one-gate MoE).
* ``cgc`` / ``ple`` (Tang et al., RecSys 2020): shared + per-task experts; task t's gate mixes [own ‖ shared];
  PLE stacks levels, with a gate over all experts feeding the shared experts of the next level.
* ``home`` (Wang et al., arXiv 2408.05430): Linear→BatchNorm→SiLU experts, hierarchy mask, feature gates,
  self-gates, each a constructor flag for the ablation rows.
* ``din`` (Zhou et al., KDD 2018): target attention over the history → MLP.
* ``moe_user_gate``: DIN's inputs into a ``zoo.moe`` MoE layer whose soft gate reads the user/input vector.
* ``awmoe`` (Gong et al., ICDE 2023): the same experts gated by the attention-weighted behaviour sequence,
  plus a contrastive loss between the gates of a history and of a randomly masked copy.

How the ``zoo.moe`` parts are used:

* Softmax gates over experts are :class:`~zoo.moe.SoftRouter` s. A gate that may only see some experts (CGC's
  [own ‖ shared], HoME's hierarchy mask) is a router over exactly those experts, not a router over all of them
  with masked logits: the hidden experts get exactly zero weight, and no gate parameters are spent on them.
  :class:`Diagnostics` scatters each gate back to the level's full expert list (zeros where it cannot see).
* AW-MoE's gate ``G = softmax(Σ_j a_j · U b_j)`` is a SoftRouter applied to the attention-pooled history
  ``Σ_j a_j b_j`` (its linear layer is U, and U is linear, so the two are equal).
* Single-layer experts (Linear→ReLU, Linear→BN→SiLU, optionally behind a feature gate) are
  :class:`~zoo.moe.ModuleExperts`, evaluated for every expert by passing all ids (as the RL policy does for its
  heads) so their activations are available for the collapse diagnostics; the gates combine them with
  ``zoo.kernels.weighted_sum``. The two-layer FFN experts of ``moe_user_gate`` and ``awmoe`` are
  :class:`~zoo.moe.FFNExperts` run through the zoo's MoE dispatch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ZooValueError, check_arg
from zoo.kernels import weighted_sum
from zoo.module import ModelOutput
from zoo.moe import ExpertStats, FFNExperts, ModuleExperts, MoELayer, SoftRouter, routing_stats
from zoo.registry import Registry

from .metrics import DEAD_SHARE, min_shared_usage, zero_activation_ratio

# ----------------------------------------------------------------------------------------------------------------
# inputs


@dataclass
class InputSpec:
    """What a batch holds; every model of a board is built from the same spec.

    Args:
        vocab_sizes: one vocabulary size per sparse field (``sparse[B, F]``, ``F = len(vocab_sizes)``; may be empty).
        embed_dim: d, width of every embedding (16: the usual size for MovieLens/KuaiRand-scale tables).
        dense_dim: Dd, number of dense float features (``dense[B, Dd]``; 0 = none).
        item_vocab: item vocabulary (id 0 is padding) for ``item[B]`` and ``hist[B, L]``; None = neither.
        history: read ``hist`` (only with ``item_vocab``).
    """

    vocab_sizes: list[int] = field(default_factory=list)
    embed_dim: int = 16
    dense_dim: int = 0
    item_vocab: int | None = None
    history: bool = True

    def __post_init__(self) -> None:
        self.vocab_sizes = [int(v) for v in self.vocab_sizes]
        check_arg(all(v > 0 for v in self.vocab_sizes), "vocab_sizes", self.vocab_sizes, "positive ints")
        check_arg(self.embed_dim > 0, "embed_dim", self.embed_dim, "a positive int")
        check_arg(self.dense_dim >= 0, "dense_dim", self.dense_dim, "a non-negative int")
        check_arg(self.item_vocab is None or self.item_vocab > 1, "item_vocab", self.item_vocab, "None or an int > 1")
        check_arg(self.vocab_sizes or self.dense_dim or self.item_vocab, "inputs", self, "at least one feature")

    @property
    def uses_history(self) -> bool:
        return self.item_vocab is not None and self.history


def as_input_spec(inputs: InputSpec | Mapping[str, Any]) -> InputSpec:
    """Accept a spec or its dict form (a recipe's ``inputs:`` block)."""
    return inputs if isinstance(inputs, InputSpec) else InputSpec(**inputs)


@dataclass
class Inputs:
    """An embedded batch: ``context[B, F·d + Dd]`` (field embeddings ‖ dense features), ``item[B, d]``,
    ``hist[B, L, d]`` and ``hist_mask[B, L]`` (True at real items); absent parts are None."""

    context: torch.Tensor
    item: torch.Tensor | None = None
    hist: torch.Tensor | None = None
    hist_mask: torch.Tensor | None = None

    def mean_history(self) -> torch.Tensor | None:
        """Masked mean of the history embeddings ``[B, d]`` (zeros for an empty history)."""
        if self.hist is None:
            return None
        m = self.hist_mask.unsqueeze(-1).to(self.hist.dtype)
        return (self.hist * m).sum(1) / m.sum(1).clamp_min(1.0)

    def flat(self, pooled_history: torch.Tensor | None = None) -> torch.Tensor:
        """``x[B, D]``: context ‖ item ‖ pooled history (the masked mean unless another pooling is given)."""
        pooled = pooled_history if pooled_history is not None else self.mean_history()
        return torch.cat([t for t in (self.context, self.item, pooled) if t is not None], dim=-1)


class FeatureEmbedding(nn.Module):
    """The input module every model shares: sparse fields (one table, per-field offsets), dense features, the
    target item and its history (one item table, padding id 0). ``d_out`` is the width of :meth:`Inputs.flat`."""

    def __init__(self, spec: InputSpec) -> None:
        super().__init__()
        self.spec = spec
        d = spec.embed_dim
        self.fields = nn.Embedding(sum(spec.vocab_sizes), d) if spec.vocab_sizes else None
        offsets = torch.tensor([0, *spec.vocab_sizes[:-1]], dtype=torch.long).cumsum(0) if spec.vocab_sizes else torch.zeros(0)
        self.register_buffer("offsets", offsets.long(), persistent=False)
        self.items = nn.Embedding(spec.item_vocab, d, padding_idx=0) if spec.item_vocab else None
        for table in (self.fields, self.items):
            if table is not None:
                nn.init.normal_(table.weight, std=d**-0.5)  # unit-norm rows on average, like the dense inputs
        if self.items is not None:
            with torch.no_grad():
                self.items.weight[0].zero_()
        self.d_context = len(spec.vocab_sizes) * d + spec.dense_dim
        self.d_out = self.d_context + (d if spec.item_vocab else 0) + (d if spec.uses_history else 0)

    def required_keys(self) -> list[str]:
        spec = self.spec
        return [k for k, used in (("sparse", bool(spec.vocab_sizes)), ("dense", spec.dense_dim > 0),
                                  ("item", spec.item_vocab is not None), ("hist", spec.uses_history)) if used]

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Inputs:
        missing = [k for k in self.required_keys() if k not in batch]
        if missing:
            raise ZooValueError(f"the batch lacks {missing}, which this model's InputSpec uses; add them to the batch "
                                "or build the model from the data's InputSpec")
        spec, parts = self.spec, []
        if self.fields is not None:
            sparse = batch["sparse"]
            check_arg(sparse.dim() == 2 and sparse.shape[1] == len(spec.vocab_sizes), "sparse.shape",
                      tuple(sparse.shape), f"[B, {len(spec.vocab_sizes)}]")
            parts.append(self.fields(sparse.long() + self.offsets).flatten(1))
        if spec.dense_dim:
            dense = batch["dense"]
            check_arg(dense.dim() == 2 and dense.shape[1] == spec.dense_dim, "dense.shape", tuple(dense.shape),
                      f"[B, {spec.dense_dim}]")
            parts.append(dense.float())
        out = Inputs(torch.cat(parts, dim=-1))
        if self.items is not None:
            out.item = self.items(batch["item"].long())
            if spec.uses_history:
                hist = batch["hist"].long()
                check_arg(hist.dim() == 2, "hist.shape", tuple(hist.shape), "[B, L]")
                out.hist, out.hist_mask = self.items(hist), hist > 0
        return out


# ----------------------------------------------------------------------------------------------------------------
# building blocks


class FeatureGate(nn.Module):
    """HoME's feature gate: ``v′ = v ⊙ 2σ(v B A)``, ``B ∈ ℝ^{d×r}``, ``A ∈ ℝ^{r×d}``.

    A starts at zero (as LoRA's up-projection), so the gate is exactly the identity at init and the factor stays
    in (0, 2); B is random so A receives gradient from the first step.
    """

    def __init__(self, d: int, rank: int = 8) -> None:
        super().__init__()
        check_arg(rank > 0, "feature_gate_rank", rank, "a positive int")
        self.down = nn.Parameter(torch.randn(d, rank) * d**-0.5)  # B
        self.up = nn.Parameter(torch.zeros(rank, d))  # A

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v * 2 * torch.sigmoid(v @ self.down @ self.up)


def block(d_in: int, d_out: int, norm: bool) -> list[nn.Module]:
    """One expert layer: Linear→BatchNorm1d→SiLU (HoME) when ``norm``, else Linear→ReLU (MMoE)."""
    if norm:
        return [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.SiLU()]
    return [nn.Linear(d_in, d_out), nn.ReLU()]


def make_expert(d_in: int, d_out: int, *, norm: bool, feature_gate_rank: int = 0) -> nn.Sequential:
    """A single-layer expert, optionally behind its own (privatised) feature gate."""
    gate = [FeatureGate(d_in, feature_gate_rank)] if feature_gate_rank else []
    return nn.Sequential(*gate, *block(d_in, d_out, norm))


def mlp(d_in: int, hidden: Sequence[int], d_out: int, act: Callable[[], nn.Module] = nn.ReLU) -> nn.Sequential:
    """``d_in → hidden… → d_out`` with ``act`` between layers (none after the last)."""
    dims, layers = [d_in, *hidden], []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], d_out))


def run_all_experts(bank: ModuleExperts, x_BD: torch.Tensor) -> torch.Tensor:
    """Every expert of ``bank`` on every row, unweighted: ``[B, n, H]`` (ids ``arange(n)`` for each row)."""
    B, n = x_BD.shape[0], bank.num_experts
    return bank(x_BD, torch.arange(n, device=x_BD.device).expand(B, n), None)


@dataclass(frozen=True)
class GateSpec:
    """One gate of an :class:`ExpertLevel`.

    ``input``: index of the level input the gate reads; ``parts``: the ``(bank, input index)`` pairs it mixes, in
    order (a bank at most once); ``own``: the pair its self-gate covers (HoME), one of ``parts``.
    """

    name: str
    input: int
    parts: tuple[tuple[str, int], ...]
    own: tuple[str, int] | None = None


@dataclass
class LevelOutput:
    """An :class:`ExpertLevel` 's results, keyed by gate name (``acts`` by ``"bank@input"``).

    ``outputs[B, H]``: each gate's mixture; ``gates[B, n]``: its weights over the experts it sees;
    ``full_gates[B, E]``: the same scattered over the level's E experts (0 where it cannot see);
    ``self_gates[B, n_own]``: self-gate weights; ``acts[B, n, H]``: expert activations.
    """

    outputs: dict[str, torch.Tensor]
    gates: dict[str, torch.Tensor]
    full_gates: dict[str, torch.Tensor]
    self_gates: dict[str, torch.Tensor]
    acts: dict[str, torch.Tensor]
    aux: dict[str, torch.Tensor]
    stats: dict[str, ExpertStats]


class ExpertLevel(nn.Module):
    """One level of gated single-layer experts — MMoE's layer, a CGC/PLE extraction level, a HoME layer.

    Banks of experts (``ModuleExperts``) are run on one or more of the level's inputs; each gate (a
    ``SoftRouter`` over exactly the experts it mixes) reads one input and mixes a chosen set of (bank, input)
    evaluations. A bank needed on several inputs runs once on their concatenation, so its BatchNorm sees the
    same statistics in training as its running averages give in eval. With ``self_gate``, a gate that owns a
    bank adds ``Σ_e s_e · expert_e`` over it, ``s`` a sigmoid (one expert) or a softmax (a SoftRouter) over the
    owned experts (HoME's self-gate; a residual path that keeps sparse tasks' own experts in use).

    Banks of size 0 are dropped, together with the parts that name them.
    """

    def __init__(
        self,
        d_in: int,
        d_hidden: int,
        banks: Mapping[str, int],
        gates: Sequence[GateSpec],
        *,
        num_inputs: int = 1,
        expert_norm: bool = False,
        feature_gate_rank: int = 0,
        self_gate: bool = False,
    ) -> None:
        super().__init__()
        for name, n in banks.items():
            check_arg(isinstance(n, int) and n >= 0, f"experts in bank {name!r}", n, "a non-negative int")
        sizes = {name: n for name, n in banks.items() if n > 0}
        check_arg(bool(sizes), "experts", dict(banks), "at least one expert")
        self.sizes, self.offsets, start = sizes, {}, 0
        for name, n in sizes.items():
            self.offsets[name], start = start, start + n
        self.num_experts = start
        self.banks = nn.ModuleDict({
            name: ModuleExperts([make_expert(d_in, d_hidden, norm=expert_norm, feature_gate_rank=feature_gate_rank)
                                 for _ in range(n)])
            for name, n in sizes.items()
        })
        specs = []
        for g in gates:
            parts = tuple(p for p in g.parts if p[0] in sizes)
            check_arg(bool(parts), f"gate {g.name!r}", g.parts, "at least one non-empty bank")
            check_arg(len({b for b, _ in parts}) == len(parts), f"gate {g.name!r}", parts, "each bank at most once")
            check_arg(all(0 <= i < num_inputs for _, i in parts) and 0 <= g.input < num_inputs, f"gate {g.name!r} inputs",
                      (g.input, parts), f"indices in [0, {num_inputs})")
            own = g.own if g.own is not None and g.own in parts else None
            specs.append(GateSpec(g.name, g.input, parts, own))
        self.specs = tuple(specs)
        self.routers = nn.ModuleDict({g.name: SoftRouter(d_in, sum(sizes[b] for b, _ in g.parts)) for g in self.specs})
        self.self_gates = nn.ModuleDict()
        if self_gate:
            for g in self.specs:
                if g.own is not None:
                    n_own = sizes[g.own[0]]
                    self.self_gates[g.name] = SoftRouter(d_in, n_own) if n_own > 1 else nn.Linear(d_in, 1)
        self.d_in, self.d_hidden, self.num_inputs = d_in, d_hidden, num_inputs

    def forward(self, inputs: Sequence[torch.Tensor]) -> LevelOutput:
        check_arg(len(inputs) == self.num_inputs, "inputs", f"{len(inputs)} tensors", f"{self.num_inputs}")
        B = inputs[0].shape[0]
        needed: dict[str, list[int]] = {}
        for g in self.specs:
            for bank, i in g.parts:
                if i not in needed.setdefault(bank, []):
                    needed[bank].append(i)
        acts: dict[tuple[str, int], torch.Tensor] = {}
        for bank, idxs in needed.items():
            x = torch.cat([inputs[i] for i in idxs]) if len(idxs) > 1 else inputs[idxs[0]]
            for i, chunk in zip(idxs, run_all_experts(self.banks[bank], x).split(B)):
                acts[(bank, i)] = chunk
        out = LevelOutput({}, {}, {}, {}, {f"{b}@{i}": a for (b, i), a in acts.items()}, {}, {})
        for g in self.specs:
            x_gate = inputs[g.input]
            experts_BnH = torch.cat([acts[p] for p in g.parts], dim=1)
            routing = self.routers[g.name](x_gate)
            z = weighted_sum(experts_BnH, routing.weights, experts_BnH.dtype)
            if g.name in self.self_gates:
                gate = self.self_gates[g.name]
                s = gate(x_gate).weights if isinstance(gate, SoftRouter) else torch.sigmoid(gate(x_gate.float()))
                own = acts[g.own]
                z = z + weighted_sum(own, s, own.dtype)
                out.self_gates[g.name] = s
            out.outputs[g.name], out.gates[g.name] = z, routing.weights
            out.full_gates[g.name] = self.scatter(g, routing.weights)
            out.aux.update({f"{g.name}/{k}": v for k, v in routing.aux.items()})
            out.stats[g.name] = routing_stats(routing.ids, routing.logits, routing.ids, routing.weights.shape[1])
        return out

    def scatter(self, gate: GateSpec, weights_Bn: torch.Tensor) -> torch.Tensor:
        """A gate's weights over its parts, placed in the level's expert order ``[B, E]`` (zeros elsewhere)."""
        full = weights_Bn.new_zeros(weights_Bn.shape[0], self.num_experts)
        col = 0
        for bank, _ in gate.parts:
            n, start = self.sizes[bank], self.offsets[bank]
            full[:, start:start + n] = weights_Bn[:, col:col + n]
            col += n
        return full

    def expert_ids(self, bank: str) -> list[int]:
        """Positions of a bank's experts in the level's expert order (the columns of ``full_gates``)."""
        if bank not in self.sizes:
            return []
        return list(range(self.offsets[bank], self.offsets[bank] + self.sizes[bank]))


# ----------------------------------------------------------------------------------------------------------------
# outputs and diagnostics


@dataclass
class Diagnostics:
    """Gates and expert activations of one batch (detached), for the collapse diagnostics.

    ``task_gates``: per task, its gate over the task-level experts ``[B, E]`` (0 where it cannot see);
    ``shared_experts``: the columns of those gates shared by all tasks; ``gates``: every softmax gate over the
    experts it sees ``[B, n]`` (each row sums to 1), keyed ``level/gate``; ``self_gates``: HoME's self-gates;
    ``expert_acts``: activations of every expert layer, ``[B, n, H]`` keyed ``level/bank@input`` (the hidden
    layers of the bottom for Shared-Bottom).
    """

    task_gates: list[torch.Tensor] = field(default_factory=list)
    shared_experts: list[int] = field(default_factory=list)
    gates: dict[str, torch.Tensor] = field(default_factory=dict)
    self_gates: dict[str, torch.Tensor] = field(default_factory=dict)
    expert_acts: dict[str, torch.Tensor] = field(default_factory=dict)

    def unit_activations(self) -> list[torch.Tensor]:
        """Every expert's activations ``[B, H]``, one tensor per expert (the input of the collapse metric)."""
        return [a[:, e] for a in self.expert_acts.values() for e in range(a.shape[1])]

    def zero_activation_ratio(self, dead_share: float = DEAD_SHARE) -> float | None:
        """:func:`~zoo.tasks.recsys.metrics.zero_activation_ratio` on this batch (None without experts)."""
        units = self.unit_activations()
        return zero_activation_ratio(units, dead_share) if units else None

    def min_shared_usage(self) -> float | None:
        """``min_t mean_x Σ_{e ∈ shared} g_{t,e}(x)`` on this batch (None without task gates or shared experts)."""
        if not self.task_gates or not self.shared_experts:
            return None
        return min_shared_usage(self.task_gates, self.shared_experts)


@dataclass
class RecsysOutput(ModelOutput):
    """``pred`` = ``logits[B, T]``; ``aux``: already-weighted extra losses (add them to Σ_t BCE_t);
    ``stats``: per gate routing statistics; ``diagnostics``: see :class:`Diagnostics`."""

    diagnostics: Diagnostics = field(default_factory=Diagnostics)

    @property
    def logits(self) -> torch.Tensor:
        return self.pred


def _detached(d: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v.detach() for k, v in d.items()}


# ----------------------------------------------------------------------------------------------------------------
# models


class RecsysModel(nn.Module):
    """Base: the shared :class:`FeatureEmbedding` and T towers; ``forward(batch) → RecsysOutput``."""

    def __init__(self, inputs: InputSpec | Mapping[str, Any], num_tasks: int = 1) -> None:
        super().__init__()
        check_arg(isinstance(num_tasks, int) and num_tasks > 0, "num_tasks", num_tasks, "a positive int")
        self.spec = as_input_spec(inputs)
        self.num_tasks = num_tasks
        self.embedding = FeatureEmbedding(self.spec)

    @staticmethod
    def make_towers(d_in: int, hidden: Sequence[int], num_tasks: int) -> nn.ModuleList:
        return nn.ModuleList(mlp(d_in, hidden, 1) for _ in range(num_tasks))

    def run_towers(self, z: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([tower(z_t) for tower, z_t in zip(self.towers, z)], dim=-1)


def param_counts(model: nn.Module) -> dict[str, int]:
    """``total`` parameters, the ``embedding`` ones (equal across models of one spec) and the ``body`` rest."""
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for p in model.embedding.parameters()) if hasattr(model, "embedding") else 0
    return {"total": total, "embedding": emb, "body": total - emb}


def _probe_spec(spec: InputSpec) -> InputSpec:
    """A spec with the same input width and 1-row tables: bodies are built on it to count their parameters."""
    return InputSpec([1] * len(spec.vocab_sizes), spec.embed_dim, spec.dense_dim,
                     2 if spec.item_vocab else None, spec.history)


def match_width(make: Callable[[int], nn.Module], budget: int) -> int:
    """The width ``w ≥ 1`` whose model ``make(w)`` has about ``budget`` body parameters (affine in ``w``)."""
    with torch.random.fork_rng(devices=[]):
        p1, p2 = (param_counts(make(w))["body"] for w in (1, 2))
    return max(1, round(1 + (budget - p1) / max(p2 - p1, 1)))


class SharedBottom(RecsysModel):
    """The dense twin: ``x → bottom (2 layers) → T towers``.

    Args:
        bottom_hidden: width of the bottom's first layer; None matches the body parameters of the MMoE built
            with ``match_experts`` experts of width ``hidden`` (so the total, embeddings included, is equal).
        hidden: width of the bottom's output (the towers' input, as an MMoE expert's).
        expert_norm: layers are Linear→BN→SiLU instead of Linear→ReLU (the twin of HoME-style experts).
    """

    def __init__(
        self,
        inputs: InputSpec | Mapping[str, Any],
        num_tasks: int = 1,
        *,
        bottom_hidden: int | None = None,
        hidden: int = 64,
        expert_norm: bool = False,
        tower_hidden: Sequence[int] = (32,),
        match_experts: int = 8,
    ) -> None:
        super().__init__(inputs, num_tasks)
        if bottom_hidden is None:
            probe = _probe_spec(self.spec)
            with torch.random.fork_rng(devices=[]):
                budget = param_counts(MMoE(probe, num_tasks, num_experts=match_experts, expert_hidden=hidden,
                                           expert_norm=expert_norm, tower_hidden=tower_hidden))["body"]
            bottom_hidden = match_width(lambda w: SharedBottom(probe, num_tasks, bottom_hidden=w, hidden=hidden,
                                                               expert_norm=expert_norm, tower_hidden=tower_hidden), budget)
        D = self.embedding.d_out
        self.bottom = nn.ModuleList([nn.Sequential(*block(D, bottom_hidden, expert_norm)),
                                     nn.Sequential(*block(bottom_hidden, hidden, expert_norm))])
        self.towers = self.make_towers(hidden, tower_hidden, num_tasks)
        self.bottom_hidden = bottom_hidden

    def forward(self, batch: Mapping[str, torch.Tensor]) -> RecsysOutput:
        h = self.embedding(batch).flat()
        acts = {}
        for i, layer in enumerate(self.bottom):
            h = layer(h)
            acts[f"bottom/{i}"] = h.detach().unsqueeze(1)
        logits = self.run_towers([h] * self.num_tasks)
        return RecsysOutput(logits, diagnostics=Diagnostics(expert_acts=acts))


def _level_diagnostics(diag: Diagnostics, out: LevelOutput, prefix: str) -> None:
    diag.gates.update(_detached(out.gates, prefix))
    diag.self_gates.update(_detached(out.self_gates, prefix))
    diag.expert_acts.update(_detached(out.acts, prefix))


class MMoE(RecsysModel):
    """MMoE (Ma et al., KDD 2018): ``y_t = tower_t(Σ_i g_{t,i}(x) E_i(x))``, ``g_t = softmax(W_t x)``.

    Args:
        num_experts, expert_hidden: E single-layer experts of width H (8 × 64 by default).
        expert_norm: Linear→BN→SiLU experts instead of Linear→ReLU (HoME's fix for ReLU collapse).
        one_gate: one gate shared by all tasks (the one-gate MoE of the MMoE paper's synthetic study).
    """

    def __init__(
        self,
        inputs: InputSpec | Mapping[str, Any],
        num_tasks: int = 1,
        *,
        num_experts: int = 8,
        expert_hidden: int = 64,
        expert_norm: bool = False,
        one_gate: bool = False,
        tower_hidden: Sequence[int] = (32,),
    ) -> None:
        super().__init__(inputs, num_tasks)
        check_arg(num_experts > 0, "num_experts", num_experts, "a positive int")
        names = ["all"] if one_gate else [f"task{t}" for t in range(num_tasks)]
        self.gate_names = ["all"] * num_tasks if one_gate else names
        self.level = ExpertLevel(self.embedding.d_out, expert_hidden, {"experts": num_experts},
                                 [GateSpec(n, 0, (("experts", 0),)) for n in names], expert_norm=expert_norm)
        self.towers = self.make_towers(expert_hidden, tower_hidden, num_tasks)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> RecsysOutput:
        out = self.level([self.embedding(batch).flat()])
        logits = self.run_towers([out.outputs[n] for n in self.gate_names])
        diag = Diagnostics([out.full_gates[n].detach() for n in self.gate_names], list(range(self.level.num_experts)))
        _level_diagnostics(diag, out, "")
        return RecsysOutput(logits, out.aux, out.stats, diagnostics=diag)


class PLE(RecsysModel):
    """PLE (Tang et al., RecSys 2020): stacked CGC levels.

    Each level has ``experts_per_task`` experts per task and ``num_shared`` shared experts. Task t's gate reads
    task t's input and mixes [own ‖ shared]; at every level but the last, a shared gate reads the shared input
    and mixes all experts, giving the next level's shared input. Level 0's inputs are all ``x``.

    Args:
        levels: number of extraction levels (2 by default, as in the paper's main results; 1 is CGC).
    """

    def __init__(
        self,
        inputs: InputSpec | Mapping[str, Any],
        num_tasks: int = 1,
        *,
        levels: int = 2,
        num_shared: int = 2,
        experts_per_task: int = 1,
        expert_hidden: int = 64,
        expert_norm: bool = False,
        tower_hidden: Sequence[int] = (32,),
    ) -> None:
        super().__init__(inputs, num_tasks)
        check_arg(isinstance(levels, int) and levels >= 1, "levels", levels, "a positive int")
        T = num_tasks
        banks = {**{f"task{t}": experts_per_task for t in range(T)}, "shared": num_shared}
        self.levels = nn.ModuleList()
        for level in range(levels):
            gates = [GateSpec(f"task{t}", t, ((f"task{t}", t), ("shared", T))) for t in range(T)]
            if level < levels - 1:
                gates.append(GateSpec("shared", T, (*((f"task{t}", t) for t in range(T)), ("shared", T))))
            d_in = self.embedding.d_out if level == 0 else expert_hidden
            self.levels.append(ExpertLevel(d_in, expert_hidden, banks, gates, num_inputs=T + 1, expert_norm=expert_norm))
        self.towers = self.make_towers(expert_hidden, tower_hidden, T)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> RecsysOutput:
        T = self.num_tasks
        xs = [self.embedding(batch).flat()] * (T + 1)
        diag, aux, stats = Diagnostics(), {}, {}
        for i, level in enumerate(self.levels):
            out = level(xs)
            prefix = f"level{i}/" if len(self.levels) > 1 else ""
            _level_diagnostics(diag, out, prefix)
            aux.update({f"{prefix}{k}": v for k, v in out.aux.items()})
            stats.update({f"{prefix}{k}": v for k, v in out.stats.items()})
            xs = [out.outputs[f"task{t}"] for t in range(T)] + [out.outputs.get("shared")]
        diag.task_gates = [out.full_gates[f"task{t}"].detach() for t in range(T)]
        diag.shared_experts = self.levels[-1].expert_ids("shared")
        return RecsysOutput(self.run_towers(xs[:T]), aux, stats, diagnostics=diag)


class CGC(PLE):
    """CGC (Tang et al., RecSys 2020): one PLE level; task t's gate mixes [own ‖ shared]."""

    def __init__(self, inputs: InputSpec | Mapping[str, Any], num_tasks: int = 1, **kwargs: Any) -> None:
        check_arg("levels" not in kwargs, "levels", kwargs.get("levels"), "unset (CGC is one level; use 'ple')")
        super().__init__(inputs, num_tasks, levels=1, **kwargs)


class HoME(RecsysModel):
    """HoME (Wang et al., arXiv 2408.05430; details the paper leaves open follow third-party implementations).

    Two layers of single-layer experts (Linear→BN→SiLU), tasks grouped a priori (``task_groups``, e.g.
    ``[[0], [1, 2, 3, 4]]``: watch-time vs interactions):

    * meta layer, on ``x``: ``meta_global`` global experts + ``meta_per_group`` experts per group. Group g's gate
      mixes [global ‖ group g] into ``z_g``; a shared gate mixes all of them into ``z_shared``.
    * task layer, on ``u_g = [z_shared ‖ z_g]`` for each group g: ``num_global`` global, ``num_per_group`` per
      group and ``num_per_task`` per task experts. Task t (in group g) has a gate on ``u_g`` mixing [global ‖
      group g ‖ task t], evaluated on ``u_g``; its output feeds tower t. Global experts run on every ``u_g``.

    Ablation flags (one board row each):

    * ``expert_norm=False``: Linear→ReLU experts ("minus norm/Swish").
    * ``hierarchy_mask=False``: every gate mixes every expert of its layer (run on the gate's input); the layers,
      banks and representations stay the same, so only the mask is removed.
    * ``feature_gate=False``: no per-expert feature gates (``feature_gate_rank`` r, 8 by default: a cheap gate).
    * ``self_gate=False``: no self-gates. With them, each group gate of the meta layer and each task gate adds
      a residual gate over its own bank (the group's experts, the task's experts): sigmoid for one expert,
      softmax (a SoftRouter) for several.

    HoME uses no balance loss; ``aux`` is empty.
    """

    def __init__(
        self,
        inputs: InputSpec | Mapping[str, Any],
        num_tasks: int = 1,
        *,
        task_groups: Sequence[Sequence[int]] | None = None,
        meta_global: int = 2,
        meta_per_group: int = 2,
        num_global: int = 2,
        num_per_group: int = 1,
        num_per_task: int = 1,
        expert_hidden: int = 64,
        expert_norm: bool = True,
        hierarchy_mask: bool = True,
        feature_gate: bool = True,
        feature_gate_rank: int = 8,
        self_gate: bool = True,
        tower_hidden: Sequence[int] = (32,),
    ) -> None:
        super().__init__(inputs, num_tasks)
        T = num_tasks
        groups = [list(g) for g in task_groups] if task_groups is not None else [list(range(T))]
        flat = sorted(t for g in groups for t in g)
        check_arg(flat == list(range(T)) and all(groups), "task_groups", task_groups,
                  f"non-empty groups that partition the tasks 0..{T - 1}")
        G = len(groups)
        self.groups, self.group_of = groups, [next(g for g, m in enumerate(groups) if t in m) for t in range(T)]
        self.hierarchy_mask, self.feature_gate, self.self_gate = hierarchy_mask, feature_gate, self_gate
        common = dict(expert_norm=expert_norm, feature_gate_rank=feature_gate_rank if feature_gate else 0, self_gate=self_gate)

        meta_banks = {"global": meta_global, **{f"group{g}": meta_per_group for g in range(G)}}
        every_meta = tuple((b, 0) for b in meta_banks)
        meta_gates = [GateSpec(f"group{g}", 0, (("global", 0), (f"group{g}", 0)) if hierarchy_mask else every_meta,
                               own=(f"group{g}", 0)) for g in range(G)]
        meta_gates.append(GateSpec("shared", 0, every_meta))
        self.meta = ExpertLevel(self.embedding.d_out, expert_hidden, meta_banks, meta_gates, **common)

        task_banks = {"global": num_global, **{f"group{g}": num_per_group for g in range(G)},
                      **{f"task{t}": num_per_task for t in range(T)}}
        task_gates = []
        for t in range(T):
            g = self.group_of[t]
            parts = (("global", g), (f"group{g}", g), (f"task{t}", g)) if hierarchy_mask else tuple((b, g) for b in task_banks)
            task_gates.append(GateSpec(f"task{t}", g, parts, own=(f"task{t}", g)))
        self.tasks = ExpertLevel(2 * expert_hidden, expert_hidden, task_banks, task_gates, num_inputs=G, **common)
        self.towers = self.make_towers(expert_hidden, tower_hidden, T)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> RecsysOutput:
        T, G = self.num_tasks, len(self.groups)
        meta = self.meta([self.embedding(batch).flat()])
        u = [torch.cat([meta.outputs["shared"], meta.outputs[f"group{g}"]], dim=-1) for g in range(G)]
        task = self.tasks(u)
        diag = Diagnostics([task.full_gates[f"task{t}"].detach() for t in range(T)], self.tasks.expert_ids("global"))
        _level_diagnostics(diag, meta, "meta/")
        _level_diagnostics(diag, task, "task/")
        aux = {**{f"meta/{k}": v for k, v in meta.aux.items()}, **{f"task/{k}": v for k, v in task.aux.items()}}
        stats = {**{f"meta/{k}": v for k, v in meta.stats.items()}, **{f"task/{k}": v for k, v in task.stats.items()}}
        logits = self.run_towers([task.outputs[f"task{t}"] for t in range(T)])
        return RecsysOutput(logits, aux, stats, diagnostics=diag)


class TargetAttention(nn.Module):
    """DIN's activation unit: ``a_j = MLP([b_j, q, b_j − q, b_j ⊙ q])`` for history items ``b_j`` and target ``q``;
    returns ``a[B, L]`` (0 at padding) and the pooled history ``Σ_j a_j b_j`` ``[B, d]``.

    As in DIN the weights are not softmax-normalised, so the pooled vector keeps the strength of the user's
    interest; PReLU between layers (DIN's choice, Dice aside).
    """

    def __init__(self, d: int, hidden: Sequence[int] = (36,)) -> None:
        super().__init__()
        self.mlp = mlp(4 * d, hidden, 1, act=nn.PReLU)

    def forward(self, hist_BLd: torch.Tensor, mask_BL: torch.Tensor, q_Bd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = q_Bd.unsqueeze(1).expand_as(hist_BLd)
        a = self.mlp(torch.cat([hist_BLd, q, hist_BLd - q, hist_BLd * q], dim=-1)).squeeze(-1)
        a = a.masked_fill(~mask_BL, 0.0)
        return a, torch.einsum("bl,bld->bd", a, hist_BLd)


class _Attentive(RecsysModel):
    """Models whose history is pooled by target attention: x = context ‖ item ‖ Σ_j a_j b_j."""

    def __init__(self, inputs: InputSpec | Mapping[str, Any], num_tasks: int, attention_hidden: Sequence[int]) -> None:
        super().__init__(inputs, num_tasks)
        check_arg(self.spec.uses_history, "inputs", self.spec, "an item vocabulary and history=True (target attention)")
        self.attention = TargetAttention(self.spec.embed_dim, attention_hidden)

    def attend(self, batch: Mapping[str, torch.Tensor]) -> tuple[Inputs, torch.Tensor, torch.Tensor]:
        emb = self.embedding(batch)
        a, pooled = self.attention(emb.hist, emb.hist_mask, emb.item)
        return emb, a, pooled


class DIN(_Attentive):
    """DIN-style base (Zhou et al., KDD 2018): target attention over the history, then an MLP to T logits.

    The dense twin of the AW-MoE board.
    """

    def __init__(
        self,
        inputs: InputSpec | Mapping[str, Any],
        num_tasks: int = 1,
        *,
        attention_hidden: Sequence[int] = (36,),
        mlp_hidden: Sequence[int] = (64, 32),
    ) -> None:
        super().__init__(inputs, num_tasks, attention_hidden)
        self.mlp = mlp(self.embedding.d_out, mlp_hidden, num_tasks)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> RecsysOutput:
        emb, a, pooled = self.attend(batch)
        return RecsysOutput(self.mlp(emb.flat(pooled)), extras={"attention": a.detach()})


class MoEUserGate(_Attentive):
    """DIN's inputs into a ``zoo.moe`` MoE layer (SoftRouter + E FFN experts, ReLU) whose gate reads the same
    user/input vector as the experts; a linear head gives T logits (``Σ_i G_i head(E_i(x))``)."""

    def __init__(
        self,
        inputs: InputSpec | Mapping[str, Any],
        num_tasks: int = 1,
        *,
        num_experts: int = 8,
        expert_hidden: int = 64,
        attention_hidden: Sequence[int] = (36,),
    ) -> None:
        super().__init__(inputs, num_tasks, attention_hidden)
        D = self.embedding.d_out
        self.moe = MoELayer(SoftRouter(D, num_experts), FFNExperts(num_experts, D, expert_hidden, "relu"))
        self.head = nn.Linear(D, num_tasks)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> RecsysOutput:
        emb, a, pooled = self.attend(batch)
        out = self.moe(emb.flat(pooled))
        g = out.routing.weights.detach()
        diag = Diagnostics([g] * self.num_tasks, list(range(g.shape[1])), {"moe": g})
        return RecsysOutput(self.head(out.y), {f"moe/{k}": v for k, v in out.aux.items()}, {"moe": out.stats},
                            {"attention": a.detach()}, diag)


def info_nce(g_BE: torch.Tensor, g_masked_BE: torch.Tensor, tau: float) -> torch.Tensor:
    """``−mean_i log[exp(cos(G_i, G̃_i)/τ) / Σ_j exp(cos(G_i, G̃_j)/τ)]``: each gate must be closest to its own
    masked copy among the batch's."""
    sim = F.normalize(g_BE.float(), dim=-1) @ F.normalize(g_masked_BE.float(), dim=-1).T / tau
    return F.cross_entropy(sim, torch.arange(sim.shape[0], device=sim.device))


class AWMoE(_Attentive):
    """AW-MoE (Gong et al., arXiv 2306.05011, ICDE 2023; the zoo's reading of the paper, not checked against its code).

    ``G = softmax(Σ_j a_j · U b_j)`` — a SoftRouter (its linear layer is U) on the attention-pooled history, with
    the attention unit's weights ``a_j``; ``ŷ = Σ_i G_i E_i(x)`` over FFN experts (``FFNExperts``, dispatched
    with the router's ids and weights), x = DIN's input, then a linear head to T logits.

    Contrastive loss (training only, ``contrastive=True``): a copy of the history with each real item masked
    with probability ρ ~ U(``mask_rate``) per row (simulating a long-tail user) gives G̃ through the same
    attention unit and router; ``aux["nce"] = nce_weight · InfoNCE(G, G̃, τ)`` (:func:`info_nce`).
    Defaults: ρ ∈ [0.3, 0.5], τ = 0.1, weight 0.1.
    """

    def __init__(
        self,
        inputs: InputSpec | Mapping[str, Any],
        num_tasks: int = 1,
        *,
        num_experts: int = 8,
        expert_hidden: int = 64,
        attention_hidden: Sequence[int] = (36,),
        contrastive: bool = True,
        mask_rate: float | Sequence[float] = (0.3, 0.5),
        tau: float = 0.1,
        nce_weight: float = 0.1,
    ) -> None:
        super().__init__(inputs, num_tasks, attention_hidden)
        lo, hi = (mask_rate, mask_rate) if isinstance(mask_rate, int | float) else tuple(mask_rate)
        check_arg(0 <= lo <= hi < 1, "mask_rate", mask_rate, "a rate or a (low, high) range in [0, 1)")
        check_arg(tau > 0, "tau", tau, "a positive float")
        check_arg(nce_weight >= 0, "nce_weight", nce_weight, "a non-negative float")
        D = self.embedding.d_out
        self.router = SoftRouter(self.spec.embed_dim, num_experts)
        self.experts = FFNExperts(num_experts, D, expert_hidden, "relu")
        self.head = nn.Linear(D, num_tasks)
        self.contrastive, self.mask_rate, self.tau, self.nce_weight = contrastive, (lo, hi), tau, nce_weight

    def mask_history(self, mask_BL: torch.Tensor) -> torch.Tensor:
        """A random masked copy of the history mask: each real item dropped with a per-row rate ρ ~ U(lo, hi)."""
        lo, hi = self.mask_rate
        rate = lo + (hi - lo) * torch.rand(mask_BL.shape[0], 1, device=mask_BL.device)
        return mask_BL & (torch.rand(mask_BL.shape, device=mask_BL.device) >= rate)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> RecsysOutput:
        emb, a, pooled = self.attend(batch)
        routing = self.router(pooled)
        logits = self.head(self.experts(emb.flat(pooled), routing.ids, routing.weights))
        aux = {f"router/{k}": v for k, v in routing.aux.items()}
        if self.training and self.contrastive and self.nce_weight > 0:
            _, pooled_masked = self.attention(emb.hist, self.mask_history(emb.hist_mask), emb.item)
            aux["nce"] = self.nce_weight * info_nce(routing.weights, self.router(pooled_masked).weights, self.tau)
        g = routing.weights.detach()
        stats = {"router": routing_stats(routing.ids, routing.logits, routing.ids, g.shape[1])}
        diag = Diagnostics([g] * self.num_tasks, list(range(g.shape[1])), {"router": g})
        return RecsysOutput(logits, aux, stats, {"attention": a.detach()}, diag)


# ----------------------------------------------------------------------------------------------------------------
# factory

MODELS: Registry[type[RecsysModel]] = Registry("recsys model")  # the names of config.ARCHS
for _name, _cls in (("shared_bottom", SharedBottom), ("mmoe", MMoE), ("cgc", CGC), ("ple", PLE), ("home", HoME),
                    ("din", DIN), ("moe_user_gate", MoEUserGate), ("awmoe", AWMoE)):
    MODELS.register(_name, _cls)


def build_model(name: str, inputs: InputSpec | Mapping[str, Any], num_tasks: int = 1, **kwargs: Any) -> RecsysModel:
    """Build a model by name (``MODELS.names()``); an unknown name or keyword raises ``ZooValueError`` (exit 2)."""
    cls = MODELS.get(name)
    try:
        return cls(inputs, num_tasks, **kwargs)
    except TypeError as err:
        raise ZooValueError(f"recsys model {name!r}: {err}") from None


__all__ = [
    "AWMoE", "CGC", "DIN", "HoME", "MMoE", "MODELS", "PLE", "Diagnostics", "ExpertLevel", "FeatureEmbedding",
    "FeatureGate", "GateSpec", "InputSpec", "Inputs", "LevelOutput", "MoEUserGate", "RecsysModel", "RecsysOutput",
    "SharedBottom", "TargetAttention", "build_model", "info_nce", "make_expert", "match_width", "mlp", "param_counts",
    "run_all_experts",
]
