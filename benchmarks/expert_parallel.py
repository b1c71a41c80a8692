"""Throughput of an expert-parallel MoE layer (``zoo.moe.parallel``) against the same layer in one process.

What it measures
    At a fixed global shape (``T`` tokens in all, model dim D, E experts of hidden dim F, top-k routing) the
    layer's forward + backward (loss ``Σ y·g`` with a random ``g``) for each world size W: W = 1 is the plain
    :class:`MoELayer` in one process; W > 1 is ``MoEConfig(expert_parallel=W)`` on W ranks (dp = 1), each holding
    E/W experts and T/W of the tokens. A step's time is the slowest rank's; the table gives the median over the
    repeats, tokens/s (global tokens per step time), the all-to-all bytes each rank sent per step (mean over ranks,
    forward and backward, counted by the layer) next to the uniform-routing formula ``2·T_rank·k·D·b·(W−1)/W``,
    and the step time relative to W = 1 (the bar: EP-2 at most 2× the single process). Each process runs
    ``--threads`` torch threads (1 by default), so W ranks use W cores against the single process's one.

How to run it
    .venv/bin/python benchmarks/expert_parallel.py                        # T=4096 D=256 E=8 F=512 k=2, W=1,2,4
    .venv/bin/python benchmarks/expert_parallel.py --worlds 1,2 --repeats 3 --json /tmp/ep.json
    .venv/bin/python benchmarks/expert_parallel.py --device cuda --worlds 1,2   # NCCL, one GPU per rank
    .venv/bin/python benchmarks/expert_parallel.py --worlds 1,2 --deepspeed      # and DeepSpeed-MoE's layer

With ``--deepspeed`` (DeepSpeed installed; on a CPU it builds with ``DS_BUILD_OPS=0`` and runs with
``DS_ACCELERATOR=cpu``, which the script sets) every world size is timed again with DeepSpeed-MoE's ``MoE`` layer
at the same shapes; its all-to-all bytes are not counted.

Ranks on the CPU talk over gloo (TCP on localhost), on CUDA over NCCL. On a shared 2-core machine a world of 4
oversubscribes the cores and the load average (printed) decides how much the numbers mean.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_times import cpu_flags  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _zoo_layer(world: int, args: argparse.Namespace) -> tuple[torch.nn.Module, Callable]:
    """The zoo's layer, sharded over ``world`` ranks, and its step's output."""
    from zoo.moe import MoEConfig, MoELayer

    cfg = MoEConfig(num_experts=args.experts, k=args.k, d_hidden=args.hidden, activation=args.activation,
                    expert_parallel=world)
    return MoELayer.from_config(cfg, args.d_model), lambda layer, x: layer(x).y


def _deepspeed_layer(world: int, args: argparse.Namespace) -> tuple[torch.nn.Module, Callable]:
    """DeepSpeed-MoE's expert-parallel layer on the same shapes: ``ep_size`` = world, top-k gating with capacity
    factor 2 (its dropless mode sizes the exchange from each rank's own counts and fails over gloo when ranks
    differ), each expert a Linear → activation → Linear MLP (with biases, which the zoo's experts do not have)."""
    import deepspeed
    from deepspeed.moe.layer import MoE

    deepspeed.init_distributed(dist_backend=dist.get_backend())
    act = {"gelu": torch.nn.GELU(), "relu": torch.nn.ReLU(), "silu": torch.nn.SiLU()}[args.activation]
    expert = torch.nn.Sequential(torch.nn.Linear(args.d_model, args.hidden), act,
                                 torch.nn.Linear(args.hidden, args.d_model))
    layer = MoE(hidden_size=args.d_model, expert=expert, num_experts=args.experts, ep_size=world, k=args.k,
                capacity_factor=2.0, eval_capacity_factor=2.0, drop_tokens=True)
    return layer, lambda layer, x: layer(x.unsqueeze(0))[0].squeeze(0)


def _rank_main(rank: int, world: int, port: int, args: argparse.Namespace, impl: str, queue) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(f"cuda:{rank}" if args.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 or impl == "deepspeed":  # DeepSpeed wants a process group even for one rank
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=world, timeout=datetime.timedelta(seconds=600))
    torch.manual_seed(0)
    layer, forward = (_zoo_layer if impl == "zoo" else _deepspeed_layer)(world, args)
    layer = layer.to(device)
    tokens = args.tokens // world
    gen = torch.Generator().manual_seed(1 + rank)
    x = torch.randn(tokens, args.d_model, generator=gen).to(device).requires_grad_()
    g = torch.randn(tokens, args.d_model, generator=gen).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        if world > 1:
            dist.barrier()

    times, fwd_bytes, bwd_bytes = [], [], []
    for step in range(args.warmup + args.repeats):
        layer.zero_grad(set_to_none=True)
        x.grad = None
        sync()
        start = time.perf_counter()
        (forward(layer, x) * g).sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # a step lasts as long as its slowest rank
        if world > 1 and impl == "zoo":
            comm = layer.experts.last_comm
            sent = torch.tensor([comm.forward, comm.backward], dtype=torch.float64)
            dist.all_reduce(sent)
            fwd_bytes.append(float(sent[0]) / world)
            bwd_bytes.append(float(sent[1]) / world)
        if step >= args.warmup:
            times.append(float(elapsed))
    if rank == 0:
        queue.put({"impl": impl, "world": world, "tokens_per_rank": tokens, "times_s": times,
                   "fwd_bytes": statistics.mean(fwd_bytes) if fwd_bytes else 0.0,
                   "bwd_bytes": statistics.mean(bwd_bytes) if bwd_bytes else 0.0})
    if dist.is_initialized():
        dist.destroy_process_group()


def run_world(world: int, args: argparse.Namespace, impl: str = "zoo") -> dict:
    """Spawn ``world`` ranks, time ``impl``'s layer and return rank 0's record."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, args, impl, queue)) for r in range(world)]
    for p in procs:
        p.start()
    record = queue.get(timeout=args.timeout)
    for p in procs:
        p.join(timeout=60)
        if p.is_alive():
            p.kill()
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4096, help="global tokens per step")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--activation", default="gelu")
    parser.add_argument("--worlds", default="1,2,4", help="comma-separated world sizes (each divides --experts)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for one world size")
    parser.add_argument("--deepspeed", action="store_true", help="also time DeepSpeed-MoE's layer on the same shapes")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    worlds = [int(w) for w in args.worlds.split(",")]
    impls = ["zoo"]
    if args.deepspeed:
        if args.device == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # spawned ranks inherit it
        if importlib.util.find_spec("deepspeed") is None:
            print("--deepspeed: DeepSpeed is not installed (pip install deepspeed; on a CPU with DS_BUILD_OPS=0)",
                  file=sys.stderr)
            return 2
        impls.append("deepspeed")

    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, flags: {cpu_flags()}")
    print(f"# torch {torch.__version__}, device {args.device}, {args.threads} thread(s) per process; "
          f"T={args.tokens} D={args.d_model} E={args.experts} F={args.hidden} k={args.k} {args.activation}, "
          f"fwd+bwd, median of {args.repeats}")
    header = (f"{'impl':>9} {'world':>5} {'T/rank':>7} {'step ms':>9} {'tokens/s':>10} {'a2a MB fwd':>11} {'a2a MB bwd':>11} "
              f"{'uniform MB':>11} {'× W=1':>7}")
    print(header)
    rows, base = [], {}
    for impl, world in [(impl, world) for impl in impls for world in worlds]:
        rec = run_world(world, args, impl)
        median = statistics.median(rec["times_s"])
        base.setdefault(impl, median if world == 1 else None)
        ratio = median / base[impl] if base[impl] else float("nan")
        elem = torch.empty((), dtype=torch.float32).element_size()
        uniform = 2 * rec["tokens_per_rank"] * args.k * args.d_model * elem * (world - 1) / world
        rec.update(median_s=median, tokens_per_s=args.tokens / median, uniform_bytes=uniform, ratio_to_single=ratio)
        rows.append(rec)
        print(f"{impl:>9} {world:>5} {rec['tokens_per_rank']:>7} {median * 1e3:>9.1f} {args.tokens / median:>10.0f} "
              f"{rec['fwd_bytes'] / 1e6:>11.2f} {rec['bwd_bytes'] / 1e6:>11.2f} {uniform / 1e6:>11.2f} {ratio:>7.2f}",
              flush=True)
    print(f"# load at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"cpu_flags": cpu_flags(), "args": vars(args) | {"json": str(args.json)},
                                         "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
