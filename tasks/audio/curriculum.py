"""Stages 1 and 2 of UniMoE-Audio's curriculum, run before the joint fit (stage 3) of a ``train.curriculum`` run.

Stage 1 trains one dense decoder per task on that task alone, all from the same initialisation. Stage 2 builds the
MoE decoder from them: each specialist's FFN is cut into ``experts_per_task`` experts (the cut parts sum to the
dense FFN), experts of the first task first; attention, norms, embeddings and heads are the specialists' mean
(they share their starting point, so their mean is a model-soup merge); the shared experts start with a zero
output projection, so the merged model begins as a mixture of the specialists. Then only the gates and the shared
experts train, on batches with as many clips of each task, while everything else stays frozen. Both stages are
short plain loops over the task's own step, so they need no trainer of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from zoo.moe import MoELayer
from zoo.moe.experts import split_dense_ffn
from zoo.moe.routing import Router

from .models import TokenDecoder

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
LossFn = Callable[[TokenDecoder, Batch], torch.Tensor]


def train_steps(model: nn.Module, params: Iterable[nn.Parameter], batches: Iterable[Batch], loss_of: LossFn,
                lr: float, label: str) -> list[float]:
    """AdamW over ``params`` for one pass of ``batches``; returns the loss of every step."""
    optimizer = torch.optim.AdamW(list(params), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for batch in batches:
        loss = loss_of(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    if losses:
        log.info("%s: %d steps, loss %.3f -> %.3f", label, len(losses), losses[0], losses[-1])
    return losses


def split_into(moe: TokenDecoder, specialists: list[TokenDecoder], experts_per_task: int) -> None:
    """Load the merged specialists into ``moe`` in place (module docstring): FFNs cut into experts, every other
    weight averaged, shared experts silent, gates as initialised."""
    dense_states = [s.state_dict() for s in specialists]
    own = moe.state_dict()
    with torch.no_grad():
        for name, value in own.items():
            if ".ffn." in name or name not in dense_states[0]:
                continue
            value.copy_(torch.stack([s[name].float() for s in dense_states]).mean(0).to(value.dtype))
        for i, block in enumerate(moe.blocks):
            layer = block.ffn
            assert isinstance(layer, MoELayer)
            for t, specialist in enumerate(specialists):
                dense = specialist.blocks[i].ffn
                w1, w2 = split_dense_ffn(dense[0].weight.t(), dense[2].weight.t(), experts_per_task)
                rows = slice(t * experts_per_task, (t + 1) * experts_per_task)
                layer.experts.w1[rows] = w1
                layer.experts.w2[rows] = w2
            if layer.shared is not None:
                layer.shared.w2.zero_()


def gate_parameters(moe: TokenDecoder) -> list[nn.Parameter]:
    """The parameters stage 2 trains: every router's and every shared expert's."""
    params: list[nn.Parameter] = []
    for module in moe.modules():
        if isinstance(module, Router) or (isinstance(module, MoELayer) and module.shared is not None):
            target = module if isinstance(module, Router) else module.shared
            params += [p for p in target.parameters() if p.requires_grad]
    return params


def run_stages(moe: TokenDecoder, build_dense: Callable[[], TokenDecoder], task_batches: list[Callable[[], Any]],
               warm_batches: list[Batch] | None, loss_of: LossFn, specialist_lr: float, gate_lr: float,
               experts_per_task: int) -> dict[str, list[float]]:
    """Stages 1 and 2 into ``moe`` (in place).

    Args:
        moe: the MoE decoder of the joint fit.
        build_dense: a fresh dense decoder; called once per task under the same seed, so they start alike.
        task_batches: per task, a callable giving stage 1's batches of that task (all its epochs).
        warm_batches: stage 2's balanced batches; None skips the gate warm-up (the ablation).
        loss_of: the task loss of a decoder on a batch.
        specialist_lr: stage 1's learning rate.
        gate_lr: stage 2's learning rate.
        experts_per_task: experts cut from each specialist's FFN.

    Returns:
        Loss curves: ``specialist{t}`` per task and ``gates``.
    """
    curves: dict[str, list[float]] = {}
    seed = torch.initial_seed()
    specialists = []
    for t, batches in enumerate(task_batches):
        torch.manual_seed(seed)
        dense = build_dense()
        curves[f"specialist{t}"] = train_steps(dense, dense.parameters(), batches(), loss_of, specialist_lr,
                                               f"stage 1, specialist {t}")
        specialists.append(dense.eval())
    split_into(moe, specialists, experts_per_task)
    if warm_batches is not None:
        params = gate_parameters(moe)
        trainable = {id(p) for p in params}
        frozen = [p for p in moe.parameters() if id(p) not in trainable and p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            curves["gates"] = train_steps(moe, params, warm_batches, loss_of, gate_lr, "stage 2, gates and shared")
        finally:
            for p in frozen:
                p.requires_grad_(True)
    moe.zero_grad(set_to_none=True)
    return curves
