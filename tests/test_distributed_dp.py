"""Data × expert parallelism on a real recipe: the forecasting MoE (``moe_e8k2_m3-monthly``, smoke data) is trained
by Lightning in one process and on 4 CPU ranks (gloo) with ``moe.expert_parallel=2``, so dp = 2, with the same
global batch; the loss curves and the final weights must agree. The recipe clips the gradient norm at 1.0, which
engages here: the norm must be that of the whole model, the expert shards of every rank included.

Both runs see the same global batches: each takes a fixed permutation of the training windows, rank ``r`` of ``w``
reading positions ``r, r+w, …`` of it (per-rank batch = global batch / w), so step ``i``'s batches over the ranks
are the one-process batch ``i``. The balance loss is off (``moe.balance_coef=0``): it is computed per rank, a
different objective from the one-process batch's. The runs happen in one child process (this file run as a script)
in its own session, killed with its ranks when it outlives ``RUN_TIMEOUT_S``.
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

GLOBAL_BATCH, STEPS, WORLD, EP = 256, 8, 4, 2
RUN_TIMEOUT_S = 80
LOSS_TOL = {"rtol": 1e-6, "atol": 1e-6}  # measured: 1.2e-7 (3.0e-6 when each rank clipped by its own norm)
WEIGHT_TOL = {"rtol": 0.0, "atol": 5e-6}  # measured: 1.0e-6 (1.3e-5 when each rank clipped by its own norm)
OVERRIDES = ["moe.balance_coef=0", f"moe.expert_parallel={EP}", f"optim.max_steps={STEPS}"]


class Interleaved(torch.utils.data.Sampler):
    """Rank ``r`` of ``w`` takes positions ``r, r+w, …`` of ``order`` (read when iterated, in the rank)."""

    def __init__(self, order: list[int]) -> None:
        self.order = order

    def _world(self) -> tuple[int, int]:
        return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)

    def __iter__(self):
        rank, world = self._world()
        return iter(self.order[rank::world])

    def __len__(self) -> int:
        rank, world = self._world()
        return len(self.order[rank::world])


class Record(L.Callback):
    """Writes, on rank 0, the world-mean loss of every step."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"].detach().clone()
        if trainer.world_size > 1:
            dist.all_reduce(loss)
            loss /= trainer.world_size
        self.losses.append(float(loss))

    def on_train_end(self, trainer, module) -> None:
        if trainer.is_global_zero:
            (self.out / f"losses{trainer.world_size}.json").write_text(json.dumps(self.losses))


def _train(out: Path, world: int) -> None:
    from zoo import api
    from zoo.config import resolve_config
    from zoo.distributed import ExpertParallelStrategy
    from zoo.task import build_from_config

    spec = api.load_task("forecasting")
    cfg, _ = resolve_config(spec.config_cls, spec.name, "moe_e8k2_m3-monthly", None, OVERRIDES, smoke=True)
    L.seed_everything(0, verbose=False)
    built = build_from_config(spec, cfg)
    data = built.datamodule.dataset("train")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(1))[:STEPS * GLOBAL_BATCH].tolist()
    collate = built.datamodule.train_dataloader().collate_fn  # the recipe's loader, only its sampler replaced
    loader = torch.utils.data.DataLoader(data, batch_size=GLOBAL_BATCH // world, sampler=Interleaved(order),
                                         collate_fn=collate)
    kwargs = {"devices": 1}
    if world > 1:
        strategy = ExpertParallelStrategy(EP, process_group_backend="gloo", timeout=datetime.timedelta(seconds=60))
        kwargs = {"devices": world, "strategy": strategy}
    trainer = L.Trainer(accelerator="cpu", max_steps=STEPS, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record(out)],
                        use_distributed_sampler=False, gradient_clip_val=cfg.trainer["gradient_clip_val"], **kwargs)
    trainer.fit(built.module, loader)
    torch.save(built.module.state_dict(), out / f"weights{world}.pt")  # rank 0's weights, full banks


def _main(out: Path) -> None:
    torch.set_num_threads(1)
    _train(out, 1)
    _train(out, WORLD)
    (out / "done").write_text("ok")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dp_ep")
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


def test_dp2_ep2_follows_the_one_process_loss_curve(runs: Path) -> None:
    one, four = (json.loads((runs / f"losses{w}.json").read_text()) for w in (1, WORLD))
    assert len(one) == len(four) == STEPS
    torch.testing.assert_close(torch.tensor(four), torch.tensor(one), **LOSS_TOL)
    assert one[-1] < one[0]  # it trains


def test_dp2_ep2_final_weights_match_one_process(runs: Path) -> None:
    one, four = (torch.load(runs / f"weights{w}.pt", weights_only=True) for w in (1, WORLD))
    assert one.keys() == four.keys()
    banks = [k for k in one if ".experts.w" in k]
    assert banks and all(four[k].shape == one[k].shape for k in banks)  # full banks came back
    for key in one:
        torch.testing.assert_close(four[key], one[key], **WEIGHT_TOL, msg=key)


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
