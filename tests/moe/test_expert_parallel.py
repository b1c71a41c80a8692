"""Expert parallelism against one process: 2 and 4 CPU ranks (gloo) run ``zoo.moe.parallel`` and compare, on every
rank, the output, the input gradient, the router's gradient (summed over the group) and the expert shards'
gradients with the single-process :class:`MoELayer` (or :class:`FFNExperts`) run on each rank's tokens in turn.

Each world size is spawned once and runs every case of its list; a case reports ``ok`` or its traceback, and the
tests below read those reports. The ranks are joined with a timeout, so a hung collective fails the tests.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import time
import traceback
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist

from zoo.errors import ZooValueError
from zoo.moe import FFNExperts, MoEConfig, MoELayer, count_params
from zoo.moe.parallel import (
    ExpertParallelFFN,
    all_reduce_expert_tokens,
    all_to_all_bytes,
    global_expert_stats,
    uniform_all_to_all_bytes,
)

D, F = 8, 16
JOIN_TIMEOUT_S = 50
TOL = {"rtol": 1e-5, "atol": 1e-6}


def _chunks(tokens: list[int], seed: int, width: int = D) -> list[torch.Tensor]:
    """The same random rows on every rank, cut into one chunk per rank."""
    gen = torch.Generator().manual_seed(seed)
    return list(torch.randn(sum(tokens), width, generator=gen).split(tokens))


def _grad(p: torch.Tensor | None) -> torch.Tensor | None:
    if p is None:
        return None
    return p.grad if p.grad is not None else torch.zeros_like(p)


def layer_case(tokens: list[int], ep: int, *, silent_expert: int | None = None, expect_drops: bool = False,
               **cfg_kwargs) -> None:
    """An EP layer built from a config against the same-seed single-process layer run on each rank's tokens."""
    rank = dist.get_rank()
    cfg = MoEConfig(d_hidden=F, expert_parallel=ep, **cfg_kwargs)
    torch.manual_seed(0)
    ref = MoELayer.from_config(replace(cfg, expert_parallel=1), D)
    torch.manual_seed(0)
    layer = MoELayer.from_config(cfg, D)
    bank = layer.experts
    group = bank.group
    members = dist.get_process_group_ranks(group)
    xs, gs = _chunks(tokens, 1), _chunks(tokens, 2)
    if silent_expert is not None:  # a constant feature and a very negative gate row: this expert never wins
        xs = [torch.cat([torch.ones(len(x), 1), x[:, 1:]], 1) for x in xs]
        for router in (ref.router, layer.router):
            with torch.no_grad():
                router.gate.weight[silent_expert] = 0.0
                router.gate.weight[silent_expert, 0] = -30.0
    x = xs[rank].clone().requires_grad_()
    out = layer(x)
    (out.y * gs[rank]).sum().backward()
    gate_grad = layer.router.gate.weight.grad.clone()
    dist.all_reduce(gate_grad, group=group)
    tokens_global = all_reduce_expert_tokens(out.stats.tokens, group)
    stats_global = global_expert_stats(out.stats, group)

    ref_tokens, drops = 0, []
    for m in members:
        x_m = xs[m].clone().requires_grad_()
        out_m = ref(x_m)
        (out_m.y * gs[m]).sum().backward()
        ref_tokens = ref_tokens + out_m.stats.tokens
        drops.append(float(out_m.stats.drop_rate))
        if m == rank:
            y_ref, x_grad_ref = out_m.y.detach(), x_m.grad
    lo, hi = bank.first_expert, bank.first_expert + bank.local_experts
    for name in ("w1", "w2", "w3"):
        shard, full = getattr(bank, name), getattr(ref.experts, name)
        if full is None:
            assert shard is None, name
            continue
        torch.testing.assert_close(shard.detach(), full.detach()[lo:hi], rtol=0, atol=0, msg=f"{name} init")
        torch.testing.assert_close(_grad(shard), full.grad[lo:hi], **TOL, msg=f"{name} grad")
    torch.testing.assert_close(out.y.detach(), y_ref, **TOL, msg="y")
    torch.testing.assert_close(x.grad, x_grad_ref, **TOL, msg="x grad")
    torch.testing.assert_close(gate_grad, ref.router.gate.weight.grad, **TOL, msg="gate grad")
    assert torch.equal(tokens_global, ref_tokens), (tokens_global, ref_tokens)
    assert torch.equal(stats_global.tokens, ref_tokens)
    torch.testing.assert_close(stats_global.load, ref_tokens.float() / ref_tokens.sum())
    if silent_expert is not None:
        assert int(tokens_global[silent_expert]) == 0 and int(tokens_global.sum()) > 0
    if expect_drops:
        assert max(drops) > 0, drops
        torch.testing.assert_close(stats_global.drop_rate, torch.tensor(sum(drops) / len(drops)))


def bank_edges() -> None:
    """Rank 0 has no tokens; rank 1 sends every slot to rank 0's experts (or leaves it empty), so rank 1 receives
    nothing; per-slot outputs (``weights=None``) and weighted sums both match FFNExperts."""
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(3)
    full = FFNExperts(2 * world, D, F, "swiglu", backend="loop")  # loop: no autograd graph on zero rows
    bank = ExpertParallelFFN.from_full(full)
    tokens = [0, *range(5, 5 + world - 1)]
    xs, gs = _chunks(tokens, 4), _chunks(tokens, 5)
    ids = [torch.tensor([[0, -1], [1, 0], [-1, -1], [1, 1], [0, 1]] * 3)[:n] for n in tokens]
    weights = [torch.rand(n, 2, generator=torch.Generator().manual_seed(6)) for n in tokens]
    x = xs[rank].clone().requires_grad_()
    y = bank(x, ids[rank], weights[rank])
    per_slot = bank(x, ids[rank], None)
    ((y * gs[rank]).sum() + per_slot.sum()).backward()
    for m in range(world):
        x_m = xs[m].clone().requires_grad_()
        y_m = full(x_m, ids[m], weights[m])
        slots_m = full(x_m, ids[m], None)
        loss_m = (y_m * gs[m]).sum() + slots_m.sum()
        if loss_m.requires_grad:  # the loop backend returns a constant for zero tokens
            loss_m.backward()
        if m == rank:
            y_ref, slots_ref, x_grad_ref = y_m.detach(), slots_m.detach(), _grad(x_m)
    lo, hi = bank.first_expert, bank.first_expert + bank.local_experts
    torch.testing.assert_close(y.detach(), y_ref, **TOL)
    torch.testing.assert_close(per_slot.detach(), slots_ref, **TOL)
    torch.testing.assert_close(x.grad, x_grad_ref, **TOL)
    for name in ("w1", "w2", "w3"):
        torch.testing.assert_close(_grad(getattr(bank, name)), getattr(full, name).grad[lo:hi], **TOL, msg=name)
    if rank > 0:  # dispatch sends, nothing comes to combine; the backward mirrors it
        sent = int((ids[rank] >= 0).sum()) * D * 4
        assert bank.last_bytes_sent == bank.last_comm.backward == sent, (bank.last_comm, sent)
        assert float(bank.w1.grad.abs().sum()) == 0.0


def uniform_bytes(num_experts: int) -> None:
    """Counted bytes against ``2·T·k·D·b·(ep−1)/ep`` forward and again backward, under uniform routing."""
    rank, ep = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(7)
    bank = ExpertParallelFFN.from_full(FFNExperts(num_experts, D, F))
    T, k = 3 * num_experts, 2
    ids = (torch.arange(T * k).view(T, k) + rank) % num_experts
    x = torch.randn(T, D, requires_grad=True)
    bank(x, ids, torch.full((T, k), 0.5)).sum().backward()
    expected = uniform_all_to_all_bytes(T, k, D, torch.float32, ep)
    assert expected == 2 * T * k * D * 4 * (ep - 1) / ep
    assert bank.last_bytes_sent == expected, (bank.last_bytes_sent, expected)
    assert bank.last_comm.backward == expected, (bank.last_comm.backward, expected)
    assert all_to_all_bytes([5, 7, 2], 4, torch.bfloat16, self_rank=1) == (5 + 2) * 4 * 2


def global_param_count(ep: int, **cfg_kwargs) -> None:
    """``count_params`` of a model whose MoE layers are expert-parallel shards equals the count of the same model
    built in one process (total and active), on every rank; the rank itself holds ``E / ep`` of the experts."""
    cfg = MoEConfig(d_hidden=F, expert_parallel=ep, **cfg_kwargs)

    def model(c: MoEConfig) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(3, D), MoELayer.from_config(c, D), MoELayer.from_config(c, D))

    sharded, whole = model(cfg), model(replace(cfg, expert_parallel=1))
    bank = whole[1].experts
    held = sum(p.numel() for p in sharded.parameters())
    assert held == sum(p.numel() for p in whole.parameters()) - 2 * (ep - 1) * sum(
        p.numel() for p in bank.parameters()) // ep
    assert count_params(sharded) == count_params(whole), (count_params(sharded), count_params(whole))
    per_expert = sum(p.numel() for p in bank.parameters()) // cfg.num_experts
    total = sum(p.numel() for p in whole.parameters())
    assert count_params(whole) == (total, total - 2 * (cfg.num_experts - cfg.k) * per_expert)


def config_errors() -> None:
    """Inside a 2-rank world: expert_parallel=4 does not divide the world size."""
    with pytest.raises(ZooValueError, match="does not divide the world size 2") as err:
        MoELayer.from_config(MoEConfig(num_experts=8, expert_parallel=4), D)
    assert "\n" not in str(err.value)


CASES = {
    2: {
        "top2": lambda: layer_case([5, 8], 2, num_experts=4, k=2),
        "top2_capacity": lambda: layer_case([7, 12], 2, num_experts=4, k=2, activation="silu", expect_drops=True,
                                            router_kwargs={"capacity_factor": 1.0}),
        "top1_swiglu_dropless": lambda: layer_case([9, 4], 2, num_experts=4, k=1, activation="swiglu"),
        "silent_expert": lambda: layer_case([6, 5], 2, num_experts=4, k=2, silent_expert=2),
        "bank_edges": bank_edges,
        "uniform_bytes": lambda: uniform_bytes(4),
        "config_errors": config_errors,
        "global_param_count_swiglu": lambda: global_param_count(2, num_experts=4, k=2, activation="swiglu"),
    },
    4: {
        "top2": lambda: layer_case([3, 6, 5, 8], 4, num_experts=8, k=2),
        "top2_capacity_dp2": lambda: layer_case([7, 10, 4, 9], 2, num_experts=4, k=2, expect_drops=True,
                                                router_kwargs={"capacity_factor": 1.0}),
        "silent_expert_dp2": lambda: layer_case([4, 7, 6, 3], 2, num_experts=4, k=2, silent_expert=1),
        "bank_edges": bank_edges,
        "uniform_bytes": lambda: uniform_bytes(8),
        "global_param_count": lambda: global_param_count(4, num_experts=8, k=2),
        "global_param_count_dp2": lambda: global_param_count(2, num_experts=4, k=1),
    },
}


def _worker(rank: int, world: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=JOIN_TIMEOUT_S - 10))
    report = {}
    for name, case in CASES[world].items():
        try:
            case()
            report[name] = "ok"
        except Exception:  # reported to the test of this case
            report[name] = traceback.format_exc()
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(report, f)
    dist.destroy_process_group()


_REPORTS: dict[int, dict[int, dict[str, str]]] = {}


def _reports(world: int, tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, str]]:
    """Every rank's ``{case: "ok" or traceback}``; the world is spawned on first use."""
    if world not in _REPORTS:
        out = tmp_path_factory.mktemp(f"ep{world}")
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(r, world, str(out / "store"), str(out))) for r in range(world)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for r in hung:
            procs[r].kill()
            procs[r].join()
        _REPORTS[world] = {}
        for r, p in enumerate(procs):
            path = out / f"rank{r}.json"
            status = "hung" if r in hung else f"exit code {p.exitcode}"
            _REPORTS[world][r] = json.loads(path.read_text()) if path.exists() else {"*": f"rank {r}: {status}"}
    return _REPORTS[world]


@pytest.mark.parametrize(("world", "case"), [(w, c) for w, cases in CASES.items() for c in cases])
def test_expert_parallel_matches_single_process(world: int, case: str, tmp_path_factory) -> None:
    for rank, report in _reports(world, tmp_path_factory).items():
        result = report.get(case, report.get("*"))
        assert result == "ok", f"world {world}, rank {rank}, case {case}:\n{result}"


def test_config_validates_expert_parallel() -> None:
    with pytest.raises(ZooValueError, match=r"moe.expert_parallel=3 is not allowed; expected a positive divisor"):
        MoEConfig(num_experts=8, expert_parallel=3)
    with pytest.raises(ZooValueError, match="moe.expert_parallel=0"):
        MoEConfig(num_experts=8, expert_parallel=0)
    assert MoEConfig(num_experts=8, expert_parallel=4).expert_parallel == 4


def test_no_process_group_is_one_line_error() -> None:
    assert not dist.is_initialized()
    with pytest.raises(ZooValueError, match="needs an initialised torch.distributed process group") as err:
        MoELayer.from_config(MoEConfig(num_experts=4, expert_parallel=2), D)
    assert "\n" not in str(err.value)
    with pytest.raises(ZooValueError, match="needs an initialised"):
        ExpertParallelFFN(4, D, F)


def test_expert_parallel_one_is_the_plain_bank() -> None:
    torch.manual_seed(0)
    a = MoELayer.from_config(MoEConfig(num_experts=4, d_hidden=F), D)
    torch.manual_seed(0)
    b = MoELayer.from_config(MoEConfig(num_experts=4, d_hidden=F, expert_parallel=1), D)
    assert type(b.experts) is FFNExperts
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
