"""``AudioModule``: teacher-forced training of the token decoder on speech and music, with UniMoE-Audio's annealed
aux loss and, for ``train.curriculum`` runs, its three-stage curriculum.

The loss is the mean cross-entropy of every scored target token (codes and EOS; PAD and BOS are padding or forced
by the delay pattern). The routers' balance-loss weight falls linearly from ``train.aux_start`` to
``train.aux_end`` over the fit. A curriculum run does stages 1–2 (:mod:`.curriculum`) when the fit starts, then
the fit itself is stage 3; the loss of a fixed validation batch is recorded just before the unfreeze and after
each of the first ``train.spike_steps`` joint steps, which is how a loss spike at the switch is measured. The
codec travels with the module (its codebooks are model info, not weights of the decoder), so ``predict`` can turn
generated tokens into audio.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from zoo.module import ModelOutput, StepOutput, ZooModule
from zoo.moe.layer import routers

from . import curriculum
from .codec import Codec
from .config import TASKS, AudioConfig
from .data import TASK_IDS, TEXT_VOCAB, AudioDataModule, target_mask
from .models import TokenDecoder


def build_decoder(cfg: AudioConfig, ffn: str | None = None, dense_hidden: int | None = None) -> TokenDecoder:
    """The decoder of ``cfg`` (``ffn``/``dense_hidden`` override the recipe's, for the curriculum's specialists)."""
    m = cfg.model
    return TokenDecoder(text_vocab=TEXT_VOCAB, num_tasks=len(TASKS), d_model=m.d_model, layers=m.layers,
                        heads=m.heads, ffn=ffn or m.ffn, moe=cfg.moe, dense_hidden=dense_hidden or m.dense_hidden,
                        max_len=m.max_len)


def run_decoder(model: TokenDecoder, batch: Mapping[str, torch.Tensor]) -> ModelOutput:
    return model(batch["text"], batch["task"], batch["audio"], batch["text_lengths"])


def token_losses(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy ``[B, T, Q]`` (0 where not scored) and the scored mask."""
    mask = target_mask(target)
    ce = F.cross_entropy(pred.flatten(0, -2).float(), target.masked_fill(~mask, 0).flatten(), reduction="none")
    return ce.view_as(target) * mask, mask


def sequence_loss(model: TokenDecoder, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the scored tokens of a batch plus the model's aux losses (the curriculum's loss)."""
    out = run_decoder(model, batch)
    ce, mask = token_losses(out.pred, batch["target"])
    aux = sum(out.aux.values(), torch.zeros(()))
    return ce.sum() / mask.sum().clamp(min=1) + aux


class AudioModule(ZooModule):
    """Trains a :class:`TokenDecoder` (module docstring).

    Args:
        model: the decoder.
        codec: the fitted codec of the training data.
        cfg: the task config.
    """

    def __init__(self, model: TokenDecoder, codec: Codec, cfg: AudioConfig) -> None:
        super().__init__(model, optim=cfg.optim)
        self.codec = codec
        self.cfg = cfg
        self.stage_curves: dict[str, list[float]] = {}
        self.spike_curve: list[float] = []
        self._probe: dict[str, torch.Tensor] | None = None
        self._tokens, self._seconds, self._started = 0, 0.0, 0.0
        self._stage = "val"

    def step(self, batch: Mapping[str, torch.Tensor]) -> StepOutput:
        out = run_decoder(self.model, batch)
        ce, mask = token_losses(out.pred, batch["target"])
        loss = ce.sum() / mask.sum().clamp(min=1)
        if not self.training:
            for name, task in TASK_IDS.items():
                rows = batch["task"] == task
                if bool(rows.any()):
                    n = mask[rows].sum()
                    self.log(f"{self._stage}/{name}_nll", ce[rows].sum() / n, batch_size=int(n), sync_dist=self.sync_dist)
        return StepOutput(loss, aux=out.aux, stats=out.stats, batch_size=int(mask.sum()))

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        self._stage = "val"
        return super().validation_step(batch, batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        self._stage = "test"
        return super().test_step(batch, batch_idx)

    @property
    def train_tokens_per_s(self) -> float:
        """Decoder positions per second of the joint fit's training steps (forward, backward and update)."""
        return self._tokens / self._seconds if self._seconds else 0.0

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._seconds += time.perf_counter() - self._started
        B, T = batch["audio"].shape[:2]
        self._tokens += int(B * (1 + batch["text"].shape[1] + T))
        if self._probe is not None and len(self.spike_curve) <= self.cfg.train.spike_steps:
            self.spike_curve.append(self._probe_loss())

    def _probe_loss(self) -> float:
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            ce, mask = token_losses(run_decoder(self.model, self._probe).pred, self._probe["target"])
        self.model.train(was_training)
        return float(ce.sum() / mask.sum())

    def _aux_coef(self, step: int) -> float:
        """The balance-loss weight of optimizer step ``step``: linear from ``aux_start`` to ``aux_end`` over the fit."""
        t = self.cfg.train
        last = max(1, int(self.trainer.estimated_stepping_batches) - 1)
        return t.aux_start + (t.aux_end - t.aux_start) * min(1.0, step / last)

    def _on_device(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in batch.items()}

    def on_fit_start(self) -> None:
        for router in routers(self.model):
            router.balance_coef = self._aux_coef(self.global_step)
        dm = self.trainer.datamodule
        if not self.cfg.train.curriculum or not isinstance(dm, AudioDataModule) or self.stage_curves:
            return
        cfg, t = self.cfg, self.cfg.train
        dm.setup("fit")

        def batches_of(task: str):
            def batches() -> list[dict[str, torch.Tensor]]:
                out: list[dict[str, torch.Tensor]] = []
                for epoch in range(t.specialist_steps):
                    out += [self._on_device(b) for b in dm.loader(dm.clips("train", [task]), shuffle=True,
                                                                  seed=cfg.seed * 1000 + epoch)]
                    if len(out) >= t.specialist_steps:
                        break
                return out[: t.specialist_steps]
            return batches

        warm = [self._on_device(b) for b in dm.balanced_batches(t.gate_steps, cfg.seed)] if t.warm_gates else None
        self.stage_curves = curriculum.run_stages(
            self.model, lambda: build_decoder(cfg, "dense", t.experts_per_task * cfg.moe.d_hidden).to(self.device),
            [batches_of(task) for task in cfg.data.tasks], warm, sequence_loss, t.specialist_lr, t.gate_lr,
            t.experts_per_task)
        self._probe = self._on_device(next(iter(dm.val_dataloader())))
        self.spike_curve = [self._probe_loss()]

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        super().on_before_optimizer_step(optimizer)
        for router in routers(self.model):  # the loss of the next step uses the next step's weight
            router.balance_coef = self._aux_coef(self.global_step + 1)


def build_module(cfg: AudioConfig, info: Mapping[str, Any]) -> AudioModule:
    codec = Codec()
    codec.vq.codebooks.copy_(torch.as_tensor(info["codebooks"]))
    codec.vq.fitted.fill_(True)
    return AudioModule(build_decoder(cfg), codec, cfg)
