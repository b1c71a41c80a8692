"""Expert parallelism (EP): each rank of a process group holds ``E / ep`` of the FFN experts, and routed tokens
travel to the rank that owns their expert and back with two all-to-all exchanges (GShard's dispatch/combine).

:class:`ExpertParallelFFN` is an :class:`~zoo.moe.experts.Experts` bank, so :class:`~zoo.moe.layer.MoELayer`
uses it unchanged: ``MoEConfig(expert_parallel=ep)`` builds it when ``torch.distributed`` is initialised. The
world is a ``("dp", "ep")`` device mesh (:func:`expert_parallel_mesh`): ranks in one ``ep`` group share the
experts, the ``dp`` groups hold replicas of the same shard. The router and its balance loss stay per rank, each
computed on that rank's own tokens (as in GShard's per-group balance loss), so routing needs no communication;
only the statistics logged are made global (:func:`global_expert_stats`). Capacity, if any, is the router's: a
dropped slot has id −1 and is not sent. Every rank must backpropagate through the layer's output, since the
backward runs the reverse exchanges as collectives.

Bytes on the wire: with uniform routing each rank sends, per step and layer, ``T·k·D·b·(ep−1)/ep`` bytes in the
dispatch and as many in the combine (``T`` local tokens, ``b`` bytes per element; rows for the rank's own
experts stay in memory), so ``2·T·k·D·b·(ep−1)/ep`` forward (:func:`uniform_all_to_all_bytes`) and the same again
backward. The exchange of per-expert counts adds ``8·E·(ep−1)/ep`` bytes per forward and is not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from zoo.errors import ZooValueError, check_arg
from zoo.kernels import ACTIVATIONS, backends, moe_ffn
from zoo.kernels.activations import GATED, apply_activation
from zoo.kernels.dispatch import combine, sort_slots

from .experts import Experts, FFNExperts, _uniform_
from .stats import ExpertStats

_MESHES: dict[tuple[int, str], tuple[object, DeviceMesh]] = {}


def _require_world(ep: int) -> int:
    check_arg(isinstance(ep, int) and not isinstance(ep, bool) and ep >= 1, "expert_parallel", ep, "a positive int")
    if not (dist.is_available() and dist.is_initialized()):
        raise ZooValueError(f"expert_parallel={ep} needs an initialised torch.distributed process group "
                            "(call torch.distributed.init_process_group first, or set moe.expert_parallel=1)")
    world = dist.get_world_size()
    if world % ep:
        raise ZooValueError(f"expert_parallel={ep} does not divide the world size {world}; "
                            "expected a world of dp × expert_parallel ranks")
    return world


def expert_parallel_mesh(ep: int, device_type: str | None = None) -> DeviceMesh:
    """The world as a ``(dp, ep)`` device mesh with dims named ``("dp", "ep")``: ranks ``[i·ep, (i+1)·ep)`` form
    the i-th ``ep`` group. Built once per ``(ep, device_type)`` and process group.

    Args:
        ep: ranks that share one bank of experts; must divide the world size.
        device_type: ``"cuda"``, ``"cpu"``, ...; default ``"cuda"`` under NCCL, else ``"cpu"``.
    """
    world = _require_world(ep)
    device_type = device_type or ("cuda" if dist.get_backend() == "nccl" else "cpu")
    key = (ep, device_type)
    cached = _MESHES.get(key)
    if cached is None or cached[0] is not dist.group.WORLD:
        _MESHES[key] = (dist.group.WORLD, init_device_mesh(device_type, (world // ep, ep), mesh_dim_names=("dp", "ep")))
    return _MESHES[key][1]


def release_meshes() -> None:
    """Forget the cached meshes (before the process group they were built on is destroyed)."""
    _MESHES.clear()


def all_to_all_bytes(num_rows_sent_per_rank: Sequence[int], d_model: int, dtype: torch.dtype,
                     self_rank: int | None = None) -> int:
    """Bytes of the token rows one rank sends in one all-to-all.

    Args:
        num_rows_sent_per_rank: rows sent to each rank of the group, in group-rank order.
        d_model: elements per row.
        dtype: element type of the rows.
        self_rank: the sender's own group rank; its rows stay in memory and are not counted. None counts all.
    """
    rows = sum(n for r, n in enumerate(num_rows_sent_per_rank) if r != self_rank)
    return int(rows) * d_model * torch.empty((), dtype=dtype).element_size()


def uniform_all_to_all_bytes(num_tokens: int, k: int, d_model: int, dtype: torch.dtype, ep: int) -> float:
    """Forward bytes one rank sends per layer and step under uniform routing: ``2·T·k·D·b·(ep−1)/ep``
    (dispatch + combine); the backward sends as many again.

    Args:
        num_tokens: T, the rank's tokens.
        k: slots per token.
        d_model: D.
        dtype: element type of the rows (``b`` bytes each).
        ep: ranks in the expert-parallel group.
    """
    return 2 * num_tokens * k * d_model * torch.empty((), dtype=dtype).element_size() * (ep - 1) / ep


@dataclass
class CommBytes:
    """Token-row bytes a rank sent to other ranks in one forward (dispatch + combine) and in its backward."""

    forward: int = 0
    backward: int = 0


def _exchange(x_ND: torch.Tensor, out_splits: list[int], in_splits: list[int], group: dist.ProcessGroup) -> torch.Tensor:
    out = x_ND.new_empty((sum(out_splits), *x_ND.shape[1:]))
    dist.all_to_all_single(out, x_ND.contiguous(), out_splits, in_splits, group=group)
    return out


class _AllToAll(torch.autograd.Function):
    """Rows of ``x`` to other ranks (``in_splits`` rows to each), ``out_splits`` rows back from each; the
    backward is the reverse exchange. Sent bytes are added to ``tally``."""

    @staticmethod
    def forward(ctx, x_ND, out_splits, in_splits, group, tally):
        ctx.out_splits, ctx.in_splits, ctx.group, ctx.tally = out_splits, in_splits, group, tally
        tally.forward += all_to_all_bytes(in_splits, x_ND.shape[1], x_ND.dtype, dist.get_rank(group))
        return _exchange(x_ND, out_splits, in_splits, group)

    @staticmethod
    def backward(ctx, grad_MD):
        rank = dist.get_rank(ctx.group)
        ctx.tally.backward += all_to_all_bytes(ctx.out_splits, grad_MD.shape[1], grad_MD.dtype, rank)
        return _exchange(grad_MD, ctx.in_splits, ctx.out_splits, ctx.group), None, None, None, None


class ExpertParallelFFN(Experts):
    """The FFN bank of :class:`~zoo.moe.experts.FFNExperts`, sharded over a process group: group rank ``r`` holds
    experts ``[r·E/ep, (r+1)·E/ep)`` as ``w1[E/ep, D, F]``, ``w2[E/ep, F, D]`` (``w3`` for gated activations).

    Built from the same random stream as :class:`FFNExperts` (each full tensor is drawn in turn and sliced, so the
    peak memory is one full tensor): with the same seed on every rank the shards are exactly the slices of the
    bank one process would build. Ids stay global: ``forward`` takes the router's ``ids`` in ``[0, E)`` or −1.
    Its state dict holds the full bank (gathered over the group, so ``state_dict`` is a collective) and loading
    takes a full bank and keeps this rank's slice, so checkpoints move between any ``ep`` and :class:`FFNExperts`.

    Args:
        num_experts: E over the whole group; a multiple of the group size.
        d_model: D.
        d_hidden: F.
        activation: as :class:`FFNExperts`.
        backend: ``zoo.kernels`` backend of the local experts.
        group: the expert-parallel process group; default the whole world.
    """

    def __init__(self, num_experts: int, d_model: int, d_hidden: int, activation: str = "gelu", backend: str = "auto",
                 group: dist.ProcessGroup | None = None) -> None:
        super().__init__()
        for name, value in (("num_experts", num_experts), ("d_model", d_model), ("d_hidden", d_hidden)):
            check_arg(isinstance(value, int) and value > 0, name, value, "a positive int")
        check_arg(activation in ACTIVATIONS, "activation", activation, ACTIVATIONS)
        check_arg(backend == "auto" or backend in backends(), "backend", backend, ["auto", *backends()])
        if not (dist.is_available() and dist.is_initialized()):
            raise ZooValueError("ExpertParallelFFN needs an initialised torch.distributed process group "
                                "(call torch.distributed.init_process_group first)")
        self.group = group if group is not None else dist.group.WORLD
        self.ep, self.rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        check_arg(num_experts % self.ep == 0, "num_experts", num_experts,
                  f"a multiple of the expert-parallel group size {self.ep}")
        self.num_experts, self.d_model, self.d_hidden = num_experts, d_model, d_hidden
        self.activation, self.backend = activation, backend
        self.local_experts = num_experts // self.ep
        lo, hi = self.first_expert, self.first_expert + self.local_experts
        shapes = [("w1", (d_model, d_hidden), d_model), ("w2", (d_hidden, d_model), d_hidden)]
        shapes += [("w3", (d_model, d_hidden), d_model)] if activation in GATED else []
        self.w3 = None
        for name, shape, fan_in in shapes:  # FFNExperts' order and init, drawn in full then sliced
            setattr(self, name, nn.Parameter(_uniform_(torch.empty(num_experts, *shape), fan_in)[lo:hi].clone()))
        self.last_comm = CommBytes()
        self.register_state_dict_post_hook(_gather_full_bank)
        self.register_load_state_dict_pre_hook(_slice_full_bank)

    @classmethod
    def from_full(cls, full: FFNExperts, group: dist.ProcessGroup | None = None) -> ExpertParallelFFN:
        """This rank's shard of an existing bank (its parameters copied); draws no random numbers."""
        with torch.device("meta"):
            bank = cls(full.num_experts, full.d_model, full.d_hidden, full.activation, full.backend, group)
        lo, hi = bank.first_expert, bank.first_expert + bank.local_experts
        for name in ("w1", "w2", "w3"):
            value = getattr(full, name)
            setattr(bank, name, nn.Parameter(value.detach()[lo:hi].clone()) if value is not None else None)
        return bank

    @property
    def first_expert(self) -> int:
        """Global id of this rank's first expert."""
        return self.rank * self.local_experts

    @property
    def last_bytes_sent(self) -> int:
        """Token-row bytes this rank sent to other ranks in the last forward (dispatch + combine)."""
        return self.last_comm.forward

    def _local_ffn(self, x_MD: torch.Tensor, ids_M: torch.Tensor) -> torch.Tensor:
        if x_MD.shape[0]:
            return moe_ffn(x_MD, ids_M[:, None], None, self.w1, self.w2, self.w3, self.activation,
                           self.backend)[:, 0]
        # no rows: an empty product still links the inputs and every weight to the output, so the backward
        # exchanges run on this rank like on the others and the weights get (zero) gradients
        dtype = x_MD.dtype
        g = x_MD @ self.w3[0].to(dtype) if self.w3 is not None else None
        return apply_activation(x_MD @ self.w1[0].to(dtype), self.activation, g) @ self.w2[0].to(dtype)

    def forward(self, x_TD: torch.Tensor, ids_TK: torch.Tensor, weights_TK: torch.Tensor | None) -> torch.Tensor:
        check_arg(x_TD.dim() == 2 and x_TD.shape[1] == self.d_model, "x.shape", tuple(x_TD.shape), f"[T, {self.d_model}]")
        check_arg(ids_TK.dim() == 2 and ids_TK.shape[0] == x_TD.shape[0], "ids.shape", tuple(ids_TK.shape),
                  f"[{x_TD.shape[0]}, k]")
        ids_TK = ids_TK.long()
        if ids_TK.numel() and ids_TK.device.type == "cpu":
            lo, hi = int(ids_TK.min()), int(ids_TK.max())
            check_arg(lo >= -1 and hi < self.num_experts, "ids", f"values in [{lo}, {hi}]",
                      f"expert ids in [0, {self.num_experts}) or -1")
        E, ep, local = self.num_experts, self.ep, self.local_experts
        slots = sort_slots(ids_TK, E)  # sorted by expert, hence by owning rank
        recv_E = torch.empty_like(slots.counts_E)  # [source rank, local expert]
        dist.all_to_all_single(recv_E, slots.counts_E, group=self.group)
        in_splits, out_splits = torch.stack([slots.counts_E.view(ep, local).sum(1), recv_E.view(ep, local).sum(1)]).tolist()
        self.last_comm = tally = CommBytes()
        x_ND = x_TD.index_select(0, slots.token_idx_N)
        x_MD = _AllToAll.apply(x_ND, out_splits, in_splits, self.group, tally)
        local_ids_M = torch.arange(local, device=ids_TK.device).repeat(ep).repeat_interleave(recv_E)
        y_MD = self._local_ffn(x_MD, local_ids_M)
        y_ND = _AllToAll.apply(y_MD, in_splits, out_splits, self.group, tally)
        if weights_TK is not None:
            weights_TK = weights_TK.masked_fill(ids_TK < 0, 0.0)
        return combine(y_ND, slots, weights_TK, x_TD.dtype)

    def extra_repr(self) -> str:
        return (f"E={self.num_experts} ({self.local_experts} on rank {self.rank} of {self.ep}), D={self.d_model}, "
                f"F={self.d_hidden}, activation={self.activation}, backend={self.backend}")


@torch.no_grad()
def _gather_full_bank(bank: ExpertParallelFFN, state: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict hook: the full ``[E, ...]`` tensors gathered over the group, so a saved bank (a checkpoint, a
    safetensors file) is the :class:`FFNExperts` one whatever ``ep`` saved it. A collective: every rank of the
    group must call ``state_dict`` together."""
    for name in ("w1", "w2", "w3"):
        if prefix + name not in state:
            continue
        shard = state[prefix + name].detach().contiguous()
        parts = [torch.empty_like(shard) for _ in range(bank.ep)]
        dist.all_gather(parts, shard, group=bank.group)
        state[prefix + name] = torch.cat(parts)


def _slice_full_bank(bank: ExpertParallelFFN, state: dict, prefix: str, local_metadata: dict, strict: bool,
                     missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
    """Load-state-dict pre-hook: a full ``[E, ...]`` bank (as :func:`_gather_full_bank` saves it, or as
    :class:`FFNExperts` does) is cut to this rank's experts; any other expert count is refused in one line."""
    for name in ("w1", "w2", "w3"):
        value = state.get(prefix + name)
        if value is None:
            continue
        if value.shape[0] != bank.num_experts:
            raise ZooValueError(f"checkpoint tensor '{prefix}{name}' holds {value.shape[0]} experts; this model has "
                                f"moe.num_experts={bank.num_experts}")
        state[prefix + name] = value[bank.first_expert:bank.first_expert + bank.local_experts]


@torch.no_grad()
def all_reduce_expert_tokens(tokens_E: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Slots per expert summed over the group (a new tensor; ``tokens_E`` is left as it is).

    Args:
        tokens_E: this rank's slots per expert (``ExpertStats.tokens``).
        group: the ranks to sum over; default the whole world.
    """
    total = tokens_E.clone()
    dist.all_reduce(total, group=group)
    return total


@torch.no_grad()
def global_expert_stats(stats: ExpertStats, group: dist.ProcessGroup | None = None) -> ExpertStats:
    """One layer's statistics over the group, for logging: slots per expert summed and the load recomputed from
    them; drop rate, entropy and active experts averaged over the ranks (each rank weighs the same).

    Args:
        stats: this rank's statistics.
        group: the ranks to gather over; default the whole world.
    """
    scalars = torch.stack([stats.drop_rate, stats.entropy, stats.active_experts]).double()
    packed = torch.cat([stats.tokens.double(), scalars.to(stats.tokens.device)])
    dist.all_reduce(packed, group=group)
    E = stats.num_experts
    tokens = packed[:E].round().to(stats.tokens.dtype)
    mean = (packed[E:] / dist.get_world_size(group)).float()
    return replace(stats, tokens=tokens, load=tokens.float() / tokens.sum().clamp_min(1).float(),
                   drop_rate=mean[0], entropy=mean[1], active_experts=mean[2])
