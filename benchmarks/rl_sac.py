"""Throughput of SAC with the PMOE actor on a gymnasium environment: env steps/s, updates/s, and the projected
wall time of a 100k-step run (the rl.mujoco-100k board's budget: at most 10 minutes on 2 cores), for K = 1 and
K = 4 in one run. The machine's load average is printed before and after: other processes on the same cores slow
every number down.

    .venv/bin/python benchmarks/rl_sac.py                          # Hopper-v5, K = 1 and 4, 3,000 steps
    .venv/bin/python benchmarks/rl_sac.py --env TwoGoal-v0 --steps 2000 --experts 1 2
    .venv/bin/python benchmarks/rl_sac.py --experts 4 --estimators pmoe gumbel score mean

Widths and batch default to the RL boards' (hidden 128, batch 128); one torch thread, as ``zoo train rl`` uses.

Run it in a scratch directory or not: MuJoCo warnings go to logging, no MUJOCO_LOG.TXT is written.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from zoo.tasks.rl.envs import make_env
from zoo.tasks.rl.loop import RunningNorm, train_off_policy
from zoo.tasks.rl.sac import SACAgent, SACConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--steps", type=int, default=3000, help="environment steps per run (default 3000)")
    p.add_argument("--start-steps", type=int, default=1000, help="random-action steps before updates (default 1000)")
    p.add_argument("--experts", type=int, nargs="+", default=[1, 4], help="K values to time (default 1 4)")
    p.add_argument("--estimators", nargs="+", default=["pmoe"], help="actor estimators to time (default pmoe)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    env = make_env(args.env, seed=0)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    print(f"{args.env} · torch {torch.__version__} · threads {torch.get_num_threads()} · hidden {args.hidden} · "
          f"batch {args.batch} · {args.steps} steps, {args.start_steps} random · "
          f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for k, estimator in [(k, e) for k in args.experts for e in args.estimators]:
        torch.manual_seed(0)
        cfg = SACConfig(num_experts=k, estimator=estimator, hidden=args.hidden, batch_size=args.batch)
        agent = SACAgent(obs_dim, act_dim, cfg)
        start = time.perf_counter()
        log = train_off_policy(env, agent, args.steps, start_steps=args.start_steps, norm=RunningNorm(obs_dim))
        wall = time.perf_counter() - start
        per_step = log.env_seconds / args.steps + (log.update_seconds / log.updates if log.updates else 0.0)
        print(f"K={k} {estimator}: {wall:.1f} s · env {args.steps / log.env_seconds:.0f} steps/s (acting included) · "
              f"updates {log.updates / max(log.update_seconds, 1e-9):.0f}/s · 100k steps ≈ {per_step * 1e5 / 60:.1f} min")
    print(f"load {os.getloadavg()[0]:.2f} after the runs")


if __name__ == "__main__":
    main()
