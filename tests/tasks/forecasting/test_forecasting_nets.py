"""Neural forecasting baselines: shapes, gradients, WaveNet causality, N-BEATS residual algebra, a tiny fit."""

import pytest
import torch
from safetensors.torch import save

from zoo.errors import ZooValueError
from zoo.tasks.forecasting.nets import NETS, NBeats, WaveNetForecaster, _covering_dilations, build_net

SIZES = [(7, 3), (15, 18), (336, 48)]


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("lookback,horizon", SIZES)
def test_forecast_shape_and_no_aux(name, lookback, horizon):
    out = build_net(name, lookback, horizon)(torch.randn(5, lookback))
    assert out.pred.shape == (5, horizon) and out.pred.dtype == torch.float32
    assert out.aux == {} and out.stats == {}


@pytest.mark.parametrize("name,kwargs", [(n, {}) for n in sorted(NETS)] + [("nbeats", {"share_weights": True})])
def test_every_parameter_gets_a_gradient(name, kwargs):
    model = build_net(name, 15, 18, **kwargs)
    model(torch.randn(8, 15)).pred.square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


@pytest.mark.parametrize("name", sorted(NETS))
def test_output_layers_are_named_head_for_partial_online_updates(name):
    assert any("head" in n for n, _ in build_net(name, 15, 18).named_parameters())


@pytest.mark.parametrize("dilations", [None, [1, 3, 2]])
def test_wavenet_features_are_causal(dilations):
    model = WaveNetForecaster(15, 4, channels=8, dilations=dilations)
    x = torch.randn(3, 15)
    base = model.features(x)
    for t in range(15):
        bumped = x.clone()
        bumped[:, t] += 1.0
        feats = model.features(bumped)
        torch.testing.assert_close(feats[..., :t], base[..., :t], rtol=0, atol=1e-6)
        assert not torch.allclose(feats[..., t], base[..., t]), f"step {t} must see its own input"


@pytest.mark.parametrize(
    "lookback,expected", [(1, [1]), (2, [1]), (15, [1, 2, 4, 8]), (16, [1, 2, 4, 8]), (17, [1, 2, 4, 8, 16])]
)
def test_default_dilations_just_cover_the_lookback(lookback, expected):
    assert _covering_dilations(lookback) == expected


def _grad_of_oldest_lag(model, lookback):
    x = torch.randn(2, lookback, requires_grad=True)
    model(x).pred.sum().backward()
    return x.grad[:, 0]


def test_wavenet_forecast_sees_the_oldest_lag_only_when_the_receptive_field_covers_it():
    covering = WaveNetForecaster(336, 48, channels=8)
    assert covering.receptive_field >= 336
    assert _grad_of_oldest_lag(covering, 336).abs().sum() > 0
    short = WaveNetForecaster(15, 4, channels=8, dilations=[1, 2])  # receptive field 4 < 15
    assert torch.equal(_grad_of_oldest_lag(short, 15), torch.zeros(2))


def _zero_(linear):
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)


def test_nbeats_forecast_is_zero_when_every_forecast_head_is_zero():
    model = NBeats(15, 18, blocks=3, width=32)
    for block in model.blocks:
        _zero_(block.forecast_head)
    assert torch.equal(model(torch.randn(4, 15)).pred, torch.zeros(4, 18))


def test_nbeats_forecast_is_the_sum_of_block_forecasts_when_backcasts_are_zero():
    model = NBeats(15, 18, blocks=3, width=32)
    for block in model.blocks[:-1]:
        _zero_(block.backcast_head)
    x = torch.randn(4, 15)
    expected = sum(block(x)[1] for block in model.blocks)  # every block sees the raw input
    torch.testing.assert_close(model(x).pred, expected)


def test_nbeats_block_that_backcasts_its_input_exactly_leaves_nothing_for_later_blocks():
    lookback, width = 6, 8
    model = NBeats(lookback, 5, blocks=3, layers=2, width=width)
    first = model.blocks[0]
    copy_in = torch.eye(width, lookback)  # [I; 0]: the MLP carries x ≥ 0 through both ReLU layers unchanged
    with torch.no_grad():
        for linear, weight in [
            (first.mlp[0], copy_in),
            (first.mlp[2], torch.eye(width)),
            (first.backcast_head, copy_in.T),
        ]:
            linear.weight.copy_(weight)
            linear.bias.zero_()
    _zero_(first.forecast_head)
    x = torch.rand(4, lookback) + 0.1
    # residual r_1 = x − backcast(x) = 0 for any x ≥ 0, so later blocks see zeros and the forecast is constant
    torch.testing.assert_close(model(x).pred, model(torch.zeros(1, lookback)).pred.expand(4, -1))


def test_nbeats_shared_weights_store_one_block_and_reuse_it():
    shared = NBeats(15, 18, blocks=3, width=32, share_weights=True)
    assert len(shared.blocks) == 1
    assert sum(p.numel() for p in shared.parameters()) == sum(p.numel() for p in shared.blocks[0].parameters())
    save(shared.state_dict())  # no aliased tensors, so the zoo's weights format accepts it
    _zero_(shared.blocks[0].backcast_head)
    x = torch.randn(4, 15)
    torch.testing.assert_close(shared(x).pred, 3 * shared.blocks[0](x)[1])


def _sine_windows(n, lookback, horizon, generator):
    """Noisy sines of random period (6–20 steps), phase and amplitude around a level, scaled like the datamodule."""
    t = torch.arange(lookback + horizon, dtype=torch.float32)
    period = 6 + 14 * torch.rand(n, 1, generator=generator)
    phase = 6.3 * torch.rand(n, 1, generator=generator)
    amp = 0.2 + 0.6 * torch.rand(n, 1, generator=generator)
    series = (
        1 + amp * torch.sin(2 * torch.pi * t / period + phase) + 0.02 * torch.randn(n, t.numel(), generator=generator)
    )
    x, y = series[:, :lookback], series[:, lookback:]
    scale = x.abs().mean(1, keepdim=True)
    return x / scale, y / scale


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second intra-op thread, and on a busy machine its spin-waiting made the fit
    tests 5–20× slower; one thread also makes the loss curve independent of the host's core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(NETS))
def test_tiny_fit_on_sine_windows_beats_the_naive_forecast(name, one_thread):
    lookback, horizon = 15, 6
    x, y = _sine_windows(64, lookback, horizon, torch.Generator().manual_seed(0))
    x_new, y_new = _sine_windows(256, lookback, horizon, torch.Generator().manual_seed(1))
    model = build_net(name, lookback, horizon)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(120):
        loss = (model(x).pred - y).abs().mean()
        if step == 0:
            initial = loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        fit, held_out = (model(x).pred - y).abs().mean().item(), (model(x_new).pred - y_new).abs().mean().item()
    naive, naive_held_out = ((a[:, -1:] - b).abs().mean().item() for a, b in [(x, y), (x_new, y_new)])
    assert fit < 0.5 * initial and fit < 0.5 * naive, (initial, naive, fit)
    assert held_out < naive_held_out, (naive_held_out, held_out)


def test_build_net_rejects_unknown_names_and_bad_sizes():
    with pytest.raises(ZooValueError, match="net='lstm'.*'nbeats'"):
        build_net("lstm", 15, 18)
    with pytest.raises(ZooValueError, match="lookback=0"):
        build_net("wavenet", 0, 18)
    with pytest.raises(ZooValueError, match="horizon=0"):
        build_net("nbeats", 15, 0)
    with pytest.raises(ZooValueError, match="d_model=30"):
        build_net("transformer", 15, 18, d_model=30, heads=4)
    with pytest.raises(TypeError):
        build_net("nbeats", 15, 18, channels=8)
