"""The backbone's tiny example: a mixture-of-regimes regression that an MoE should split across experts.

Inputs come from ``regimes`` Gaussian clusters; each regime maps inputs to targets through its own random
two-layer network, so one expert per regime is the natural solution. ``run_demo`` trains, side by side on the
same data, an MoE with the load-balance loss, the same MoE without it, and a dense twin with the same active
parameters, and reports held-out MSE and how evenly the experts are loaded. ``zoo demo`` prints the table and
writes the expert-load plots.

It is a teaching and smoke example for the shared backbone, not a benchmark of any paper.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zoo.callbacks import ExpertStatsCallback
from zoo.module import ModelOutput, OptimConfig, ZooModule
from zoo.moe import MoEConfig, MoELayer, collect
from zoo.task import quiet_trainer


@dataclass
class RegimeData:
    """Sizes of the synthetic mixture-of-regimes problem."""

    d_in: int = 16
    d_out: int = 4
    regimes: int = 4
    n_train: int = 4096
    n_val: int = 1024
    noise: float = 0.05
    seed: int = 0


def make_regime_data(cfg: RegimeData) -> tuple[TensorDataset, TensorDataset]:
    """Train and validation sets drawn independently from the same regimes (validation is never trained on)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    centers = 3.0 * torch.randn(cfg.regimes, cfg.d_in, generator=gen)
    maps_in = torch.randn(cfg.regimes, cfg.d_in, 32, generator=gen) / cfg.d_in**0.5
    maps_out = torch.randn(cfg.regimes, 32, cfg.d_out, generator=gen) / 32**0.5

    def sample(n: int) -> TensorDataset:
        regime = torch.randint(cfg.regimes, (n,), generator=gen)
        x = centers[regime] + torch.randn(n, cfg.d_in, generator=gen)
        y = torch.einsum("nh,nho->no", torch.tanh(torch.einsum("nd,ndh->nh", x, maps_in[regime])), maps_out[regime])
        return TensorDataset(x, y + cfg.noise * torch.randn(n, cfg.d_out, generator=gen))

    return sample(cfg.n_train), sample(cfg.n_val)


#: The demo's MoE; the dense variant matches its active width.
DENSE_TWIN = MoEConfig(num_experts=8, k=2, d_hidden=64, router="top_k", balance_coef=0.05)


class TinyMoERegressor(nn.Module):
    """``Linear → LayerNorm → x + MoELayer(x) → Linear``: the smallest model that exercises the whole backbone.

    With ``moe=None`` the middle block is a dense FFN of width ``k · d_hidden`` of :data:`DENSE_TWIN` (the twin of
    the demo's MoE: the same active parameters per token).
    """

    def __init__(self, d_in: int, d_out: int, d_model: int, moe: MoEConfig | None) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(d_in, d_model), nn.LayerNorm(d_model))
        self.moe = MoELayer.from_config(moe, d_model) if moe is not None else None
        twin = DENSE_TWIN.k * DENSE_TWIN.d_hidden
        self.dense = None if moe is not None else nn.Sequential(nn.Linear(d_model, twin), nn.GELU(), nn.Linear(twin, d_model))
        self.out = nn.Linear(d_model, d_out)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.inp(x)
        if self.moe is None:
            return ModelOutput(self.out(h + self.dense(h)))
        moe_out = self.moe(h)
        aux, stats = collect({"moe": moe_out})
        return ModelOutput(self.out(h + moe_out.y), aux, stats)


@dataclass
class DemoResult:
    name: str
    val_mse: float
    load_cv: float | None
    seconds: float


def train_one(
    name: str,
    moe: MoEConfig | None,
    data: RegimeData,
    steps: int,
    out_dir: Path | None,
    seed: int = 0,
) -> DemoResult:
    """Train one variant for ``steps`` optimizer steps and evaluate it on the held-out set."""
    L.seed_everything(seed, verbose=False)
    train, val = make_regime_data(data)
    model = TinyMoERegressor(data.d_in, data.d_out, 32, moe)
    module = ZooModule(model, nn.functional.mse_loss, OptimConfig(lr=3e-3))
    stats_cb = ExpertStatsCallback(every_n_steps=10, plot=out_dir is not None, dirpath=out_dir / name if out_dir else None)
    trainer = quiet_trainer(max_steps=steps, callbacks=[stats_cb], log_every_n_steps=10)
    start = time.perf_counter()
    trainer.fit(module, DataLoader(train, batch_size=128, shuffle=True))
    seconds = time.perf_counter() - start
    result = trainer.validate(module, DataLoader(val, batch_size=512), verbose=False)[0]
    load_cv = None
    if stats_cb.history:
        final = torch.tensor(stats_cb.history["moe"][-1][1])
        load_cv = float(final.std(unbiased=False) / final.mean())
    return DemoResult(name, float(result["val/task_loss"]), load_cv, seconds)


def run_demo(steps: int = 300, out_dir: Path | None = None, seed: int = 0) -> list[DemoResult]:
    """Train the three variants (balanced MoE, unbalanced MoE, dense twin) on the same data."""
    data = RegimeData(seed=seed)
    variants = {
        "moe_e8k2": DENSE_TWIN,
        "moe_e8k2_nobalance": replace(DENSE_TWIN, balance_coef=0.0),
        "dense": None,
    }
    return [train_one(name, cfg, data, steps, out_dir, seed) for name, cfg in variants.items()]
