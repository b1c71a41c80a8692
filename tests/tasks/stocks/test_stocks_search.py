"""The in-run hyperparameter search and MIGA's router warm-up: deterministic trials, refusals in one line, every
trial from the same weights with a fresh optimizer, selection on validation IC only (never the test days), the
same trials for the board's rows, and the dense gate against a hand-written softmax combination."""

import math

import pytest
import torch

from zoo.config import resolve_config
from zoo.errors import ZooValueError
from zoo.leaderboard import load_spec, row_config
from zoo.task import quiet_trainer
from zoo.tasks.stocks.config import SearchConfig, StocksConfig
from zoo.tasks.stocks.data import StockDataModule
from zoo.tasks.stocks.model import MIGA, StocksModule, apply_trial, build_module
from zoo.tasks.stocks.search import trial_list

TINY = {"n_stocks": 16, "n_days": 110}
SPACE = {"optim.lr": [0.0003, 0.001], "model.dropout": [0.0, 0.2]}


def _config(**layer):
    cfg, _ = resolve_config(StocksConfig, "stocks", "miga_g4e4_style-panel",
                            layers=[{"data.panel": TINY, "data.lookback": 5, "trainer.max_epochs": 2,
                                     "trainer.num_sanity_val_steps": 0, "model.hidden": 16, "model.d_expert": 16,
                                     **layer}])
    return cfg


def _trainer(epochs):
    return quiet_trainer(max_epochs=epochs, num_sanity_val_steps=0, limit_train_batches=3, limit_val_batches=2)


@pytest.fixture(scope="module")
def dm():
    module = StockDataModule("style_panel", lookback=5, panel_kwargs=TINY)
    module.setup("fit")
    return module


def test_trials_are_the_grid_or_a_seeded_draw_from_it():
    grid = trial_list(SearchConfig(space=SPACE))
    assert grid == [{"optim.lr": 0.0003, "model.dropout": 0.0}, {"optim.lr": 0.0003, "model.dropout": 0.2},
                    {"optim.lr": 0.001, "model.dropout": 0.0}, {"optim.lr": 0.001, "model.dropout": 0.2}]
    drawn = trial_list(SearchConfig(space=SPACE, trials=3))
    assert len(drawn) == 3 and all(t in grid for t in drawn)
    assert [grid.index(t) for t in drawn] == sorted(grid.index(t) for t in drawn)  # kept in grid order
    assert drawn == trial_list(SearchConfig(space=SPACE, trials=3))  # deterministic
    assert trial_list(SearchConfig(space=SPACE, trials=4)) == grid
    assert trial_list(SearchConfig()) == []


@pytest.mark.parametrize(("layer", "message"), [
    ({"search.space": {"model.hidden": [8, 16]}}, "search.space key='model.hidden'"),
    ({"search.space": {"optim.lr": []}}, "a non-empty list"),
    ({"search.space": {"optim.lr": [0.001, -1.0]}}, "each a positive number"),
    ({"search.space": {"optim.lr": ["1e-3"]}}, "each a positive number"),
    ({"search.space": {"model.dropout": [0.0, 0.0]}}, "distinct values"),
    ({"search.space": {"optim.lr": [0.001]}, "search.trials": 2}, "search.trials=2"),
    ({"search.space": {"optim.lr": [0.001]}, "search.trials": 0}, "search.trials=0"),
    ({"search.space": {"optim.lr": [0.001]}, "model.arch": "ridge"}, "empty for model.arch='ridge'"),
    ({"search.space": {"optim.lr": [0.001]}, "optim.scheduler": "cosine"}, "optim.scheduler='cosine'"),
    ({"search.space": {"optim.lr": [0.001]}, "trainer.max_steps": 10}, "trainer.max_steps=10"),
    ({"model.router_warmup_epochs": 1, "model.arch": "gru"}, "model.router_warmup_epochs=1"),
    ({"model.router_warmup_epochs": 1, "model.oracle": True}, "model.router_warmup_epochs=1"),
    ({"model.router_warmup_epochs": -1}, "model.router_warmup_epochs=-1"),
])
def test_bad_search_or_warmup_is_one_line(layer, message):
    with pytest.raises(ZooValueError) as err:
        _config(**layer)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_board_rows_gru_and_miga_get_the_same_trials():
    for board in ("stocks.style-panel", "stocks.style-panel-control"):
        spec = load_spec(board)
        rows = {r.name: r for r in spec.rows}
        for tier in ("smoke", "full"):
            gru, miga = (row_config(spec, rows[name], tier, 0)[1] for name in ("gru", "miga"))
            assert trial_list(gru.search) == trial_list(miga.search) and len(trial_list(gru.search)) >= 2
            assert gru.trainer["max_epochs"] == miga.trainer["max_epochs"]


class _Scripted(StocksModule):
    """Validation ICs given by a script instead of measured, and a record of what each epoch started from."""

    def __init__(self, *args, script, **kwargs):
        super().__init__(*args, **kwargs)
        self.script, self.starts = list(script), []

    def selection_score(self):
        return self.script[self.current_epoch]

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        optimizer = self.trainer.optimizers[0]
        self.starts.append({"weights": {k: v.clone() for k, v in self.model.state_dict().items()},
                            "lr": optimizer.param_groups[0]["lr"], "state": len(optimizer.state),
                            "dropout": self.model.encoder.gru.dropout})

    def on_validation_epoch_end(self):
        super().on_validation_epoch_end()
        if self.best_epoch == self.current_epoch:
            self.weights_at_best = {k: v.clone() for k, v in self.model.state_dict().items()}


def test_search_restarts_each_trial_and_keeps_the_best_validation_epoch(dm, monkeypatch):
    cfg = _config(**{"search.space": SPACE, "search.trials": 2})
    trials = trial_list(cfg.search)
    base = build_module(cfg, dm.model_info())
    module = _Scripted(base.model, cfg.optim, trials=trials, epochs_per_trial=2, script=[0.1, 0.3, 0.2, 0.25])
    monkeypatch.setattr(dm, "test_dataloader", lambda: pytest.fail("the search read the test days"))
    _trainer(2).fit(module, datamodule=dm)

    assert len(module.starts) == 4  # 2 trials × 2 epochs in one fit
    first, second = module.starts[0], module.starts[2]
    assert all(torch.equal(first["weights"][k], second["weights"][k]) for k in first["weights"])  # same init
    assert not torch.equal(module.starts[1]["weights"]["head.weight"], first["weights"]["head.weight"])
    assert first["state"] == 0 and second["state"] == 0 and module.starts[1]["state"] > 0  # fresh optimizer
    assert [s["lr"] for s in module.starts] == [trials[0]["optim.lr"]] * 2 + [trials[1]["optim.lr"]] * 2
    assert [s["dropout"] for s in module.starts] == [trials[0]["model.dropout"]] * 2 + [trials[1]["model.dropout"]] * 2

    assert module.best_epoch == 1 and module.trial_best == [0.3, 0.25]
    kept = module.model.state_dict()
    assert all(torch.equal(kept[k], module.weights_at_best[k]) for k in kept)  # the chosen epoch's weights
    metrics = module.search_metrics()
    assert metrics["search/trial"] == 0 and metrics["search/trials"] == 2
    assert metrics["search/optim.lr"] == trials[0]["optim.lr"]
    assert metrics["search/trial0/val_ic"] == 0.3 and metrics["search/trial1/val_ic"] == 0.25


def test_search_picks_a_later_trial_when_it_validates_better(dm):
    cfg = _config(**{"search.space": {"optim.lr": [0.001, 0.002, 0.003]}})
    base = build_module(cfg, dm.model_info())
    module = _Scripted(base.model, cfg.optim, trials=trial_list(cfg.search), epochs_per_trial=1,
                       script=[0.1, 0.05, 0.2])
    _trainer(1).fit(module, datamodule=dm)
    metrics = module.search_metrics()
    assert metrics["search/trial"] == 2 and metrics["search/optim.lr"] == 0.003
    assert [metrics[f"search/trial{i}/val_ic"] for i in range(3)] == [0.1, 0.05, 0.2]


def test_no_search_is_one_plain_fit(dm):
    module = build_module(_config(), dm.model_info())
    _trainer(2).fit(module, datamodule=dm)
    assert module.trainer.current_epoch == 2 and module.search_metrics() == {}
    assert math.isfinite(module.best_ic)


def test_apply_trial_sets_lr_dropout_and_balance():
    model = MIGA(6, 8, heads=2, d_expert=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    apply_trial(model, [optimizer], {"optim.lr": 0.01, "model.dropout": 0.3, "model.balance": 0.5})
    assert optimizer.param_groups[0]["lr"] == 0.01 and model.encoder.gru.dropout == 0.3
    assert model.router.importance_coef == 0.5


def test_dense_gate_combines_every_expert_by_the_router_softmax():
    torch.manual_seed(0)
    model = MIGA(6, 8, groups=2, experts_per_group=3, k=2, heads=2, d_expert=8)
    x = torch.randn(10, 4, 6)
    model.train()
    model.dense_routing = True
    dense = model(x).pred
    h = model.encoder(x)
    probs = torch.softmax(model.router(h).logits.float(), dim=-1)
    scores = model.head(model.expert_outputs(h)).squeeze(-1)
    torch.testing.assert_close(dense, (probs * scores).sum(-1))
    model.eval()  # validation and test route top-k even while the warm-up flag is set
    routing = model.router(model.encoder(x))
    topk = model(x).pred
    want = (scores.gather(1, routing.ids) * routing.weights).sum(-1)
    torch.testing.assert_close(topk, want)


def test_dense_gate_sends_every_stocks_gradient_to_every_expert():
    torch.manual_seed(1)
    model = MIGA(6, 8, groups=4, experts_per_group=4, k=1, heads=2, d_expert=8, iga=False)
    x = torch.randn(3, 4, 6)
    model.train()
    model.dense_routing = True
    model(x).pred.sum().backward()
    up = model.experts.w1  # [experts, d_model, d_hidden]
    assert all(up.grad[e].abs().sum() > 0 for e in range(16))
    model.zero_grad()
    model.dense_routing = False
    model(x).pred.sum().backward()
    assert sum(bool(up.grad[e].abs().sum() > 0) for e in range(16)) <= 3  # top-1: at most one expert a stock


def test_warmup_epochs_use_the_dense_gate_in_training_only(dm):
    cfg = _config(**{"model.router_warmup_epochs": 1, "trainer.max_epochs": 3})
    module = build_module(cfg, dm.model_info())
    seen = []
    original = module.model.forward

    def spy(x, group=None):
        seen.append((module.current_epoch, module.model.training, module.model.dense_routing))
        return original(x, group)

    module.model.forward = spy
    _trainer(3).fit(module, datamodule=dm)
    dense = {(epoch, training) for epoch, training, flag in seen if flag and training}
    assert dense == {(0, True)}  # the first epoch's training steps only
    assert {(e, t) for e, t, _ in seen} >= {(1, True), (2, True), (0, False)}
