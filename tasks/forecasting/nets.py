"""Dense neural baselines of the forecasting boards: N-BEATS, a WaveNet-style CNN and a small Transformer.

El Mahtout & Ziel (2026) compare their MoE against these families, so they share the interface of
:class:`~zoo.tasks.forecasting.model.SeasonalNaive`: the last ``L`` values of a series, scaled by their mean
absolute value, in (``x_BL``, float32 ``[B, L]``); a direct ``H``-step forecast in the same scale out, wrapped in
a :class:`~zoo.module.ModelOutput` without aux losses (no MoE inside). :func:`build_net` builds one by name from
:data:`NETS`. Output layers have ``head`` in their names so that partial online learning's default parameter
patterns (``online.train``) update them, as they do the MoE forecaster's head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zoo.errors import check_arg
from zoo.module import ModelOutput


def _check_sizes(lookback: int, horizon: int) -> None:
    """Fail early with the zoo's error: a zero size would otherwise build empty layers that fail later."""
    check_arg(lookback >= 1, "lookback", lookback, "a positive int")
    check_arg(horizon >= 1, "horizon", horizon, "a positive int")


class NBeatsBlock(nn.Module):
    """One generic N-BEATS block: ``layers`` × (Linear + ReLU) of width ``width``, then linear heads.

    The generic basis of Oreshkin et al. (2020) is a linear map to expansion coefficients followed by a linear
    basis; their product is one linear map, so each head here is a single ``Linear``. ``backcast=False`` drops
    the backcast head: the last block's backcast feeds nothing, and a head without gradient would only be noise
    in the parameter count.
    """

    def __init__(self, lookback: int, horizon: int, layers: int, width: int, *, backcast: bool = True) -> None:
        super().__init__()
        dims = [lookback] + [width] * layers
        self.mlp = nn.Sequential(*(m for a, b in zip(dims, dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())))
        self.backcast_head = nn.Linear(width, lookback) if backcast else None
        self.forecast_head = nn.Linear(width, horizon)

    def forward(self, x_BL: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Return ``(backcast [B, L] or None, forecast [B, H])``."""
        h = self.mlp(x_BL)
        return (self.backcast_head(h) if self.backcast_head is not None else None), self.forecast_head(h)


class NBeats(nn.Module):
    """N-BEATS, generic architecture (Oreshkin et al. 2020), one stack of ``blocks`` blocks.

    Doubly residual: block ``i`` sees what the earlier blocks could not explain, ``r_i = r_{i−1} − backcast_{i−1}``
    (``r_0 = x``), and the forecast is the sum of every block's forecast. ``share_weights`` runs one block
    ``blocks`` times, the paper's within-stack sharing; the block is stored once rather than aliased in a
    ``ModuleList``, so the state dict has no shared tensors (safetensors refuses those).

    Defaults (3 blocks, 2 layers, width 128) give 66,516 parameters at L = 15, H = 18, comparable to the
    zoo's 8-expert MoE forecaster (68,370).
    """

    def __init__(
        self,
        lookback: int,
        horizon: int,
        *,
        blocks: int = 3,
        layers: int = 2,
        width: int = 128,
        share_weights: bool = False,
    ) -> None:
        super().__init__()
        _check_sizes(lookback, horizon)
        check_arg(blocks >= 1, "blocks", blocks, "a positive int")
        check_arg(layers >= 1, "layers", layers, "a positive int")
        check_arg(width >= 1, "width", width, "a positive int")
        if share_weights:
            # The shared block's backcast is used by every pass but the last, so it keeps its backcast head.
            self.blocks = nn.ModuleList([NBeatsBlock(lookback, horizon, layers, width)])
        else:
            self.blocks = nn.ModuleList(
                NBeatsBlock(lookback, horizon, layers, width, backcast=i < blocks - 1) for i in range(blocks)
            )
        self.num_blocks = blocks

    def forward(self, x_BL: torch.Tensor) -> ModelOutput:
        residual, forecast = x_BL, 0.0
        for i in range(self.num_blocks):
            backcast, block_forecast = self.blocks[i % len(self.blocks)](residual)
            forecast = forecast + block_forecast
            if i < self.num_blocks - 1:
                residual = residual - backcast
        return ModelOutput(forecast)


class WaveNetLayer(nn.Module):
    """Dilated causal convolution (kernel 2) → gated ``tanh · sigmoid`` → 1×1 residual and skip projections.

    Causality comes from padding ``dilation`` zeros on the left only, so output ``t`` sees inputs ``t`` and
    ``t − dilation``. ``residual=False`` drops the residual projection of the last layer, whose output feeds
    nothing (only the skips reach the head).
    """

    def __init__(self, channels: int, dilation: int, *, residual: bool = True) -> None:
        super().__init__()
        self.pad = nn.ConstantPad1d((dilation, 0), 0.0)
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size=2, dilation=dilation)
        self.residual = nn.Conv1d(channels, channels, 1) if residual else None
        self.skip = nn.Conv1d(channels, channels, 1)

    def forward(self, h_BCL: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Return ``(next residual stream [B, C, L] or None, skip [B, C, L])``."""
        filt, gate = self.conv(self.pad(h_BCL)).chunk(2, dim=1)
        z = torch.tanh(filt) * torch.sigmoid(gate)
        nxt = h_BCL + self.residual(z) if self.residual is not None else None
        return nxt, self.skip(z)


def _covering_dilations(lookback: int) -> list[int]:
    """``1, 2, 4, …`` until the receptive field ``1 + Σ d`` (kernel 2) reaches ``lookback``."""
    dilations = [1]
    while 1 + sum(dilations) < lookback:
        dilations.append(2 * dilations[-1])
    return dilations


class WaveNetForecaster(nn.Module):
    """WaveNet-style forecaster (van den Oord et al. 2016, as used for forecasting by Borovykh et al. 2017).

    The ``L`` lags are a 1-channel sequence: 1×1 input conv → :class:`WaveNetLayer` per dilation → ReLU(Σ skips)
    → 1×1 conv → ReLU (:meth:`features`, ``[B, C, L]``, causal in time) → ``Linear(C, H)`` on the last time step.
    The default dilations double until the receptive field covers ``L``, so that last step sees every lag and
    the head's size does not grow with ``L``.
    """

    def __init__(
        self, lookback: int, horizon: int, *, channels: int = 32, dilations: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        _check_sizes(lookback, horizon)
        check_arg(channels >= 1, "channels", channels, "a positive int")
        dilations = list(dilations) if dilations is not None else _covering_dilations(lookback)
        check_arg(len(dilations) > 0 and all(d >= 1 for d in dilations), "dilations", dilations, "positive ints")
        self.dilations = dilations
        self.inp = nn.Conv1d(1, channels, 1)
        last = len(dilations) - 1
        self.layers = nn.ModuleList(WaveNetLayer(channels, d, residual=i < last) for i, d in enumerate(dilations))
        self.out = nn.Sequential(nn.ReLU(), nn.Conv1d(channels, channels, 1), nn.ReLU())
        self.head = nn.Linear(channels, horizon)

    @property
    def receptive_field(self) -> int:
        """How many lags the last time step sees: ``1 + Σ dilations`` for kernel 2."""
        return 1 + sum(self.dilations)

    def features(self, x_BL: torch.Tensor) -> torch.Tensor:
        """Per-time-step features ``[B, C, L]``; step ``t`` depends only on ``x[:, :t+1]``."""
        h = self.inp(x_BL.unsqueeze(1))
        skips = 0.0
        for layer in self.layers:
            h, skip = layer(h)
            skips = skips + skip
        return self.out(skips)

    def forward(self, x_BL: torch.Tensor) -> ModelOutput:
        return ModelOutput(self.head(self.features(x_BL)[:, :, -1]))


class TransformerForecaster(nn.Module):
    """A small encoder-only Transformer over the lags: ``Linear(1, d)`` value embedding + learned positions →
    pre-norm ``nn.TransformerEncoder`` → LayerNorm → ``Linear(d, H)`` on the last token.

    Attention is bidirectional, so the last token (the newest lag) can gather the whole window; reading it
    rather than the flattened sequence keeps the head at ``d·H`` parameters for long lookbacks. No dropout, like
    the zoo's MoE forecaster, so the rows compare architectures rather than regularisers.
    """

    def __init__(self, lookback: int, horizon: int, *, d_model: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        _check_sizes(lookback, horizon)
        check_arg(heads >= 1, "heads", heads, "a positive int")
        check_arg(d_model >= 1 and d_model % heads == 0, "d_model", d_model, f"a positive multiple of heads={heads}")
        check_arg(layers >= 1, "layers", layers, "a positive int")
        self.embed = nn.Linear(1, d_model)
        self.pos = nn.Parameter(torch.randn(lookback, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=4 * d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        # Nested tensors only speed up padded batches; windows are never padded, and norm_first disables them.
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.head = nn.Linear(d_model, horizon)

    def forward(self, x_BL: torch.Tensor) -> ModelOutput:
        h = self.encoder(self.embed(x_BL.unsqueeze(-1)) + self.pos)
        return ModelOutput(self.head(h[:, -1]))


NETS: dict[str, type[nn.Module]] = {
    "nbeats": NBeats,
    "wavenet": WaveNetForecaster,
    "transformer": TransformerForecaster,
}


def build_net(name: str, lookback: int, horizon: int, **kwargs: object) -> nn.Module:
    """Build the baseline ``name`` of :data:`NETS`; ``kwargs`` go to its constructor (keyword-only sizes)."""
    check_arg(name in NETS, "net", name, sorted(NETS))
    return NETS[name](lookback, horizon, **kwargs)
