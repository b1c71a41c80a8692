"""Training with DDP + expert parallelism (``zoo.distributed``) against one process: a tiny MoE regressor is trained
by Lightning once in one process and once on 2 CPU ranks (gloo, ``moe.expert_parallel=2``) with the same global
batch; the loss curves, the expert gradients of the first step (kept out of DDP's all-reduce) and the final weights
must agree, and checkpoints must move between EP=2 and EP=1 both ways with identical weights.

Both runs happen in one child process (this file run as a script) in its own session, killed with its ranks when
it outlives ``RUN_TIMEOUT_S``, so a hung collective fails the tests instead of hanging them.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist

from zoo.callbacks import save_checkpoint
from zoo.distributed import ExpertParallelStrategy, check_expert_counts, expert_parallel_of, trainer_strategy, \
    without_expert_parallel
from zoo.errors import ZooValueError
from zoo.moe import FFNExperts, MoEConfig, MoELayer
from zoo.moe.parallel import ExpertParallelFFN
from zoo.module import ZooModule, param_groups
from zoo.optim import OptimConfig

D, E, ROWS, GLOBAL_BATCH, EPOCHS = 8, 4, 32, 8, 2
RUN_TIMEOUT_S = 75
TOL = {"rtol": 1e-4, "atol": 1e-6}


class TinyMoE(torch.nn.Module):
    """Linear → MoE layer (no balance loss, so one process and the ranks optimise the same objective) → head."""

    def __init__(self, ep: int = 1) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(3, D)
        self.moe = MoELayer.from_config(MoEConfig(num_experts=E, k=2, d_hidden=16, balance_coef=0.0,
                                                  expert_parallel=ep), D)
        self.head = torch.nn.Linear(D, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.moe(self.inp(x)).y).squeeze(-1)


def _module() -> ZooModule:
    torch.manual_seed(0)
    return ZooModule(TinyMoE(), torch.nn.functional.mse_loss, OptimConfig(name="adam", lr=1e-2))


class Interleaved(torch.utils.data.Sampler):
    """Rank ``r`` of ``w`` takes rows ``r, r+w, …`` in order (read when iterated, in the rank): step ``i``'s batches
    over the ranks are the one-process batch ``i``. Lightning's own distributed sampler would shuffle."""

    def __init__(self, n: int) -> None:
        self.n = n

    def _world(self) -> tuple[int, int]:
        return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)

    def __iter__(self):
        rank, world = self._world()
        return iter(range(rank, self.n, world))

    def __len__(self) -> int:
        rank, world = self._world()
        return len(range(rank, self.n, world))


def _loader(batch: int) -> torch.utils.data.DataLoader:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(ROWS, 3, generator=gen)
    y = x.sin().sum(1)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch,
                                       sampler=Interleaved(ROWS))


class Record(L.Callback):
    """Writes, on rank 0, the world-mean loss of every step and the full expert gradients of step 0."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.losses: list[float] = []
        self.grads: dict[str, list] = {}

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        if self.grads:
            return
        for name, m in module.named_modules():
            if isinstance(m, (FFNExperts, ExpertParallelFFN)):
                g = m.w1.grad.detach().clone()
                if isinstance(m, ExpertParallelFFN):
                    parts = [torch.empty_like(g) for _ in range(m.ep)]
                    dist.all_gather(parts, g, group=m.group)
                    g = torch.cat(parts)
                self.grads[name] = g.tolist()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"].detach().clone()
        if trainer.world_size > 1:
            dist.all_reduce(loss)
            loss /= trainer.world_size
        self.losses.append(float(loss))

    def on_train_end(self, trainer, module) -> None:
        ignored = sorted(getattr(module, "_ddp_params_and_buffers_to_ignore", []))
        if trainer.is_global_zero:
            report = {"losses": self.losses, "grads": self.grads, "ignored": ignored}
            (self.out / f"record{trainer.world_size}.json").write_text(json.dumps(report))


class SaveAtEnd(L.Callback):
    """``zoo.callbacks.save_checkpoint`` (every rank takes part) when training ends."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer, module) -> None:
        save_checkpoint(trainer, self.path)


def _train(out: Path, world: int) -> None:
    """Fit the tiny module on ``world`` CPU ranks (EP = world) and save its checkpoint and final weights."""
    module = _module()
    kwargs = {"devices": 1}
    if world > 1:
        kwargs = {"devices": world, "strategy": ExpertParallelStrategy(world, timeout=datetime.timedelta(seconds=60))}
    trainer = L.Trainer(accelerator="cpu", max_epochs=EPOCHS, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record(out)],
                        use_distributed_sampler=False, **kwargs)
    trainer.fit(module, _loader(GLOBAL_BATCH // world))
    torch.save(module.state_dict(), out / f"weights{world}.pt")  # the parent's module: rank 0's weights returned
    if world == 1:
        trainer.save_checkpoint(out / "ep1.ckpt")


def _resume_ep1_on_ep2(out: Path) -> None:
    """Resume the one-process checkpoint on 2 ranks for one more epoch; its checkpoint must load in one process."""
    module = _module()
    trainer = L.Trainer(accelerator="cpu", devices=2, max_epochs=EPOCHS + 1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[SaveAtEnd(out / "ep2.ckpt")],
                        use_distributed_sampler=False,
                        strategy=ExpertParallelStrategy(2, timeout=datetime.timedelta(seconds=60)))
    trainer.fit(module, _loader(GLOBAL_BATCH // 2), ckpt_path=out / "ep1.ckpt", weights_only=False)
    torch.save(module.state_dict(), out / "weights_resumed2.pt")
    # the same epoch in one process from the same checkpoint: the reference for the resumed weights
    module = _module()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=EPOCHS + 1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, _loader(GLOBAL_BATCH), ckpt_path=out / "ep1.ckpt", weights_only=False)
    torch.save(module.state_dict(), out / "weights_resumed1.pt")


def _main(out: Path) -> None:
    torch.set_num_threads(1)
    _train(out, 1)
    _train(out, 2)
    _resume_ep1_on_ep2(out)
    (out / "done").write_text("ok")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp_ep")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, __file__, str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True, text=True)
    try:
        log, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and the ranks it spawned
        log, _ = proc.communicate()
        pytest.fail(f"the training runs took over {RUN_TIMEOUT_S} s:\n{log[-4000:]}")
    assert proc.returncode == 0 and (out / "done").exists(), log[-4000:]
    return out


def _load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_two_ranks_follow_the_one_process_loss_curve(runs: Path) -> None:
    one, two = (json.loads((runs / f"record{w}.json").read_text()) for w in (1, 2))
    assert len(one["losses"]) == len(two["losses"]) == EPOCHS * ROWS // GLOBAL_BATCH
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), **TOL)
    assert one["losses"][-1] < one["losses"][0]  # it trains


def test_expert_gradients_skip_ddp_and_match_one_process(runs: Path) -> None:
    one, two = (json.loads((runs / f"record{w}.json").read_text()) for w in (1, 2))
    assert two["ignored"] == ["model.moe.experts.w1", "model.moe.experts.w2"]
    assert one["grads"].keys() == two["grads"].keys() == {"model.moe.experts"}
    torch.testing.assert_close(torch.tensor(two["grads"]["model.moe.experts"]),
                               torch.tensor(one["grads"]["model.moe.experts"]), **TOL)


def test_trained_weights_match_and_come_back_full(runs: Path) -> None:
    one, two = _load(runs / "weights1.pt"), _load(runs / "weights2.pt")
    assert one.keys() == two.keys()
    assert two["model.moe.experts.w1"].shape == (E, D, 16)
    for key in one:
        torch.testing.assert_close(two[key], one[key], **TOL, msg=key)


def test_checkpoint_round_trips_between_ep1_and_ep2(runs: Path) -> None:
    # EP=1 → EP=2: the resumed epoch on 2 ranks equals the same epoch in one process (weights and Adam state sliced)
    resumed2, resumed1 = _load(runs / "weights_resumed2.pt"), _load(runs / "weights_resumed1.pt")
    for key in resumed1:
        torch.testing.assert_close(resumed2[key], resumed1[key], **TOL, msg=key)
    # EP=2 → EP=1: the 2-rank checkpoint holds full banks and full optimizer state, and loads into one process
    ckpt = torch.load(runs / "ep2.ckpt", weights_only=False)
    for key, value in ckpt["state_dict"].items():
        assert torch.equal(value, resumed2[key]), key
    module = _module()
    module.load_state_dict(ckpt["state_dict"])
    assert all(torch.equal(v, ckpt["state_dict"][k]) for k, v in module.state_dict().items())
    adam = ckpt["optimizer_states"][0]["state"]
    assert {tuple(s["exp_avg"].shape) for s in adam.values()} >= {(E, D, 16), (E, 16, D)}
    optimizer = torch.optim.Adam(param_groups(module.optimized(), 0.0))
    optimizer.load_state_dict(ckpt["optimizer_states"][0])


def test_world_not_divisible_is_one_line() -> None:
    with pytest.raises(ZooValueError, match=r"moe.expert_parallel=4 does not divide the world size 2") as err:
        L.Trainer(accelerator="cpu", devices=2, strategy=ExpertParallelStrategy(4), logger=False)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_nccl_without_cuda_is_one_line() -> None:
    with pytest.raises(ZooValueError, match="'nccl' needs CUDA") as err:
        ExpertParallelStrategy(2, process_group_backend="nccl")
    assert "\n" not in str(err.value)


def test_checkpoint_with_other_expert_count_is_one_line() -> None:
    module = _module()
    state = dict(module.state_dict())
    state["model.moe.experts.w1"] = torch.zeros(2 * E, D, 16)
    with pytest.raises(ZooValueError, match=r"'model.moe.experts.w1' holds 8 experts; this model has "
                                            r"moe.num_experts=4") as err:
        check_expert_counts(module, state)
    assert "\n" not in str(err.value)
    check_expert_counts(module, module.state_dict())  # the module's own state passes


def test_configs_build_the_full_bank_and_pick_the_strategy() -> None:
    from dataclasses import dataclass, field

    @dataclass
    class Cfg:
        moe: MoEConfig = field(default_factory=lambda: MoEConfig(num_experts=4, expert_parallel=2))
        seed: int = 0

    cfg = Cfg()
    assert expert_parallel_of(cfg) == 2 and expert_parallel_of(object()) == 1
    plain = without_expert_parallel(cfg)
    assert plain.moe.expert_parallel == 1 and cfg.moe.expert_parallel == 2 and plain.moe.num_experts == 4
    assert without_expert_parallel(plain) is plain
    strategy = trainer_strategy("ddp", 2, "cpu", ranks=2)
    assert isinstance(strategy, ExpertParallelStrategy) and strategy.process_group_backend == "gloo"
    assert trainer_strategy("ddp", 1) == "ddp"
    with pytest.raises(ZooValueError, match="trainer.strategy='fsdp' is not supported"):
        trainer_strategy("fsdp", 2, ranks=2)


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
