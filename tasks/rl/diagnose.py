"""Do PMOE's experts split? Each expert's mean action, the critic's value of that action and the gate's weights at
a fixed set of probe states, recorded over a SAC training run and drawn as one figure::

    python -m zoo.tasks.rl.diagnose pmoe-sac_k4_two-goal --steps 4000 --every 250 --out runs/probe-two-goal

trains the recipe (``--set key=value`` overrides as ``zoo train``), probes every ``--every`` steps and writes
``probes.json`` and ``probes.png`` to ``--out``. On ``TwoGoal-v0`` the probe states are fixed points between the
start and the goals (the two goals lie up-left and up-right of each); elsewhere they are states of a random-action
episode of the environment. The headline number is the *spread*: the largest distance between two experts' mean
actions, averaged over the probe states (0: the experts agree; on the two-goal task ≈ 1.4 when one expert heads
up-left and another up-right).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from zoo.errors import ZooError
from zoo.io import atomic_write_bytes, atomic_write_text

from .config import RLConfig
from .envs import TWO_GOAL_ID, make_env
from .loop import RunningNorm, train_off_policy
from .sac import SACAgent
from .training import torch_threads

TWO_GOAL_PROBES = ((0.0, 0.0), (0.0, 0.4), (-0.4, 0.4), (0.4, 0.4), (0.0, 0.8))


@dataclass
class Probe:
    """The actor and critic at ``S`` probe states after ``step`` environment steps: ``mean_action[S][K][A]`` (each
    expert's ``tanh(μ_k)``), ``q[S][K]`` (``min(Q1, Q2)`` of that action) and the gate's ``weights[S][K]``."""

    step: int
    mean_action: list
    q: list
    weights: list

    @property
    def spread(self) -> float:
        """Largest distance between two experts' mean actions, averaged over the probe states."""
        a = np.asarray(self.mean_action)
        return float(np.linalg.norm(a[:, :, None] - a[:, None], axis=-1).max(axis=(1, 2)).mean())


def probe_states(env_id: str, n: int = 5, seed: int = 0) -> np.ndarray:
    """Raw probe observations ``[S, obs_dim]``: the fixed two-goal points, or the first ``n`` states of a
    random-action episode (reset seed ``seed``)."""
    if env_id == TWO_GOAL_ID:
        return np.asarray(TWO_GOAL_PROBES, np.float64)
    env = make_env(env_id, seed=seed)
    obs, _ = env.reset(seed=seed)
    states = [np.asarray(obs, np.float64)]
    while len(states) < n:
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
        states.append(np.asarray(obs, np.float64))
    env.close()
    return np.stack(states)


@torch.no_grad()
def probe(agent: SACAgent, states: np.ndarray, step: int, norm: RunningNorm | None = None) -> Probe:
    """Measure ``agent`` at raw ``states[S, obs_dim]`` (normalised by ``norm`` first when given)."""
    x = torch.from_numpy(norm.normalize(states) if norm is not None else states.astype(np.float32))
    dist = agent.actor(x)
    S, K, A = dist.mu.shape
    mean_action = torch.tanh(dist.mu)
    q = agent.critic.min(x.repeat_interleave(K, dim=0), mean_action.reshape(S * K, A)).reshape(S, K)
    return Probe(step, mean_action.tolist(), q.tolist(), dist.weights.tolist())


def train_with_probes(cfg: RLConfig, every: int, states: np.ndarray | None = None) -> list[Probe]:
    """Train a SAC agent of ``cfg`` for ``cfg.train.steps`` steps (seed ``cfg.seed``, ``cfg.train.threads``
    threads, no evaluation) and probe it at ``states`` (default ``probe_states(cfg.env)``) before training and
    every ``every`` steps."""
    states = probe_states(cfg.env) if states is None else states
    torch.manual_seed(cfg.seed)
    env = make_env(cfg.env, seed=cfg.seed)
    agent = SACAgent(env.observation_space.shape[0], env.action_space.shape[0], cfg.sac)
    norm = RunningNorm(env.observation_space.shape[0]) if cfg.train.normalize_obs else None
    probes = [probe(agent, states, 0, norm)]

    def on_step(state) -> None:
        if state.step % every == 0:
            probes.append(probe(agent, states, state.step, norm))

    with torch_threads(cfg.train.threads):
        train_off_policy(env, agent, cfg.train.steps, start_steps=cfg.train.start_steps, norm=norm, seed=cfg.seed,
                         on_step=on_step)
    env.close()
    return probes


def plot_probes(probes: list[Probe], title: str) -> bytes:
    """A PNG: per expert over the steps, its mean action (one panel per action dim, at most two), its Q and its gate
    weight at the first probe state, and the spread over all probe states."""
    from matplotlib.figure import Figure

    steps = [p.step for p in probes]
    action = np.asarray([p.mean_action for p in probes])  # [T, S, K, A]
    q, w = np.asarray([p.q for p in probes]), np.asarray([p.weights for p in probes])
    dims = min(action.shape[-1], 2)
    panels = [(f"mean action[{d}] at probe 0", action[:, 0, :, d]) for d in range(dims)]
    panels += [("Q of the mean action at probe 0", q[:, 0]), ("gate weight at probe 0", w[:, 0])]
    fig = Figure(figsize=(3.4 * (len(panels) + 1), 3.2))
    axes = fig.subplots(1, len(panels) + 1)
    for ax, (name, values) in zip(axes, panels, strict=False):
        for k in range(values.shape[1]):
            ax.plot(steps, values[:, k], label=f"expert {k + 1}")
        ax.set(title=name, xlabel="environment steps")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[-1].plot(steps, [p.spread for p in probes], color="black")
    axes[-1].set(title="spread (mean over probes)", xlabel="environment steps")
    axes[-1].grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    from zoo.config import resolve_config

    p = argparse.ArgumentParser(description="where PMOE's experts point over a training run")
    p.add_argument("recipe", help="an rl recipe with algo: sac (e.g. pmoe-sac_k4_two-goal)")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, required=True, help="folder for probes.json and probes.png")
    args = p.parse_args(argv)
    try:
        overrides = [*args.overrides, f"train.steps={args.steps}", f"seed={args.seed}"]
        cfg, _ = resolve_config(RLConfig, "rl", args.recipe, overrides=overrides)
        if cfg.algo != "sac":
            raise ZooError(f"recipe {args.recipe}: the probe needs a SAC recipe (algo: sac), not {cfg.algo}")
        probes = train_with_probes(cfg, args.every)
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "probes.json", json.dumps([{**asdict(p), "spread": p.spread} for p in probes]))
    atomic_write_bytes(args.out / "probes.png", plot_probes(probes, f"{args.recipe}, seed {args.seed}"))
    last = probes[-1]
    print(f"step {last.step}: spread {last.spread:.3f}; gate at probe 0 {np.round(last.weights[0], 3).tolist()}; "
          f"mean actions at probe 0 {np.round(last.mean_action[0], 2).tolist()}")
    print(f"wrote {args.out / 'probes.json'} and {args.out / 'probes.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
