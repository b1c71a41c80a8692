"""``zoo train rl``: the environment loop in the zoo's flow (``TaskSpec.train``), with checkpoints, resume and a
progress bar; plus the golden trace of a recipe.

SAC runs the off-policy loop (``loop.train_off_policy``), PPO the on-policy one over vectorised environments
(``ppo.train_on_policy``). A SAC run dir gets ``checkpoints/last.ckpt`` (the module's state dict, the optimisers, the loop's step, RNG states and
log; ``torch.load(weights_only=True)``-safe) and ``checkpoints/replay-<step>.npz`` (the replay buffer, named by ``last.ckpt``) every
``train.checkpoint_every`` steps and at the end, ``curve.csv`` (evaluation returns over steps) and
``learning_curve.png``. ``zoo train rl --resume RUN`` restores all of it and continues from the saved step; only the
episode that was in progress when the checkpoint was written is restarted. A PPO run writes ``last.ckpt`` (weights,
optimisers and the on-policy loop's state: RNGs, reward scaler, every environment mid-episode; no buffer) after the
first update past every ``train.checkpoint_every`` steps and at the end; ``--resume`` continues it exactly as the
uninterrupted run (``ppo.train_on_policy``).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.callbacks import write_expert_load
from zoo.errors import ZooValueError
from zoo.hub import load_checkpoint
from zoo.io import atomic_write_bytes, atomic_write_text

from .config import RLConfig
from .loop import LoopState, TrainLog, curve_auc, train_off_policy
from .module import EnvDataModule, RLModule
from .ppo import RolloutCollector, make_vector_env, train_on_policy
from .sac import ReplayBuffer


def save_checkpoint(ckpt_dir: Path, module: RLModule, state: LoopState | dict[str, Any] | None, env_id: str) -> None:
    """Write the replay buffer (SAC, ``replay-<step>.npz``), then ``last.ckpt`` naming it (each atomically).
    ``state``: SAC's ``LoopState``, PPO's loop state (``train_on_policy``'s snapshot), or None (weights and
    optimisers only)."""
    payload: dict[str, Any] = {
        "state_dict": module.state_dict(),
        "optimizers": {k: opt.state_dict() for k, opt in module.model.agent.optimizers().items()},
        "env": env_id,
    }
    replay = None
    if isinstance(state, dict):
        payload["loop"] = state
    elif state is not None:
        # The buffer goes to a file named for its step and last.ckpt names it: a kill between the two writes leaves
        # the previous checkpoint with its own buffer, never a buffer ahead of its weights.
        replay = f"replay-{state.step}.npz"
        state.buffer.save(ckpt_dir / replay)
        payload["loop"] = {"step": state.step, "rng": state.rng.bit_generator.state, "replay": replay,
                           "torch_rng": torch.get_rng_state(), "log": asdict(state.log)}
    out = io.BytesIO()
    torch.save(payload, out)
    atomic_write_bytes(ckpt_dir / "last.ckpt", out.getvalue())
    for old in ckpt_dir.glob("replay*.npz"):  # buffers no checkpoint names any more
        if old.name != replay:
            old.unlink(missing_ok=True)


def _restore(ckpt_path: Path, module: RLModule, env_id: str, algo: str) -> dict[str, Any]:
    """Load ``ckpt_path``, check it is a resumable ``algo`` run of ``env_id``, restore weights and optimisers into
    ``module``; returns the checkpoint's loop state."""
    ckpt = load_checkpoint(ckpt_path)
    if ckpt.get("env") != env_id:
        raise ZooValueError(f"{ckpt_path}: a checkpoint of {ckpt.get('env', 'another task')!r}, not of an {env_id} RL run")
    if "loop" not in ckpt:
        raise ZooValueError(f"{ckpt_path}: holds no loop state to resume from (a PPO run saved before resuming existed)")
    saved = ckpt["loop"].get("algo", "sac")
    if saved != algo:
        raise ZooValueError(f"{ckpt_path}: a {saved.upper()} checkpoint; this config trains with algo: {algo}")
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise ZooValueError(f"{ckpt_path}: does not fit this model ({str(err).splitlines()[0]})") from None
    optimizers = module.model.agent.optimizers()
    for k, opt_state in ckpt["optimizers"].items():
        optimizers[k].load_state_dict(opt_state)
    return ckpt["loop"]


def load_loop_state(ckpt_path: Path, module: RLModule, env_id: str) -> LoopState:
    """Restore weights and optimisers of a SAC run into ``module`` and return the loop state to continue from."""
    loop = _restore(ckpt_path, module, env_id, "sac")
    rng = np.random.default_rng()
    rng.bit_generator.state = loop["rng"]
    torch.set_rng_state(loop["torch_rng"])
    buffer = ReplayBuffer.load(ckpt_path.parent / loop.get("replay", "replay.npz"))
    return LoopState(buffer, rng, TrainLog(**loop["log"]), loop["step"])


class _Progress:
    """A rich progress bar over environment steps showing the last episode's return and the last evaluation."""

    def __init__(self, total: int, done: int, env_id: str, enabled: bool) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"))
        self.task = self.bar.add_task(env_id, total=total, completed=done, info="")
        self.last_return = self.last_eval = None

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()

    def episode(self, step: int, ret: float) -> None:
        self.last_return = ret
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=f"episode return {ret:.1f}")

    def step(self, state: LoopState) -> None:
        if self.bar is None or state.step % 100:
            return
        parts = []
        if self.last_return is not None:
            parts.append(f"episode return {self.last_return:.1f}")
        if state.log.eval_returns:
            parts.append(f"eval {state.log.eval_returns[-1]:.1f}")
        self.bar.update(self.task, completed=state.step, info=" · ".join(parts))


def _write_curve(run_dir: Path, log: TrainLog, env_id: str) -> None:
    rows = ["step,eval_return"] + [f"{s},{r:.6g}" for s, r in zip(log.eval_steps, log.eval_returns, strict=True)]
    atomic_write_text(run_dir / "curve.csv", "\n".join(rows) + "\n")
    if not log.eval_steps:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(log.eval_steps, log.eval_returns, marker="o", ms=3)
    ax.set(xlabel="environment steps", ylabel="deterministic return", title=env_id)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(run_dir / "learning_curve.png", buf.getvalue())


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch threads and restore the caller's count after it: the setting is global, and a
    leaderboard process that trains RL rows and then other tasks must not leave those on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(cfg: RLConfig, module: RLModule, dm: EnvDataModule, run_dir: Path, *, resume: Path | None = None,
          progress: bool = True) -> dict[str, float]:
    """Run (or continue) the environment loop with ``train.threads`` torch threads; returns the training metrics
    (AUC, throughput)."""
    with torch_threads(cfg.train.threads):
        return _train(cfg, module, dm, run_dir, resume, progress)


def _train(cfg: RLConfig, module: RLModule, dm: EnvDataModule, run_dir: Path, resume: Path | None,
           progress: bool) -> dict[str, float]:
    if cfg.algo == "ppo":
        return _train_ppo(cfg, module, run_dir, progress, resume)
    t = cfg.train
    state = load_loop_state(Path(resume), module, cfg.env) if resume is not None else None
    model = module.model
    env, eval_env = dm.make_env(cfg.seed), dm.make_env(cfg.seed + 1)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = state if state is not None else LoopState.fresh(env, model.agent, t.steps, cfg.seed)
    start = time.perf_counter()
    with _Progress(t.steps, state.step, cfg.env, progress) as bar:

        def on_step(s: LoopState) -> None:
            bar.step(s)
            if s.step % t.checkpoint_every == 0 and s.step < t.steps:
                save_checkpoint(ckpt_dir, module, s, cfg.env)

        log = train_off_policy(env, model.agent, t.steps, state=state, start_steps=t.start_steps,
                               eval_every=t.eval_every, eval_env=eval_env, eval_episodes=t.eval_episodes,
                               norm=model.obs_norm if t.normalize_obs else None, seed=cfg.seed,
                               on_episode=bar.episode, on_step=on_step)
    save_checkpoint(ckpt_dir, module, state, cfg.env)
    env.close()
    eval_env.close()
    return _finish(run_dir, log, cfg, start)


def _train_ppo(cfg: RLConfig, module: RLModule, run_dir: Path, progress: bool, resume: Path | None) -> dict[str, float]:
    t, model = cfg.train, module.model
    loop = _restore(Path(resume), module, cfg.env, "ppo") if resume is not None else None
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    done = loop["step"] if loop is not None else 0
    start = time.perf_counter()
    with _Progress(t.steps, done, cfg.env, progress) as bar:

        def on_update(step: int, snapshot) -> None:
            nonlocal done
            if step // t.checkpoint_every > done // t.checkpoint_every or step >= t.steps:
                save_checkpoint(ckpt_dir, module, snapshot(), cfg.env)
            done = step

        log = train_on_policy(cfg.env, model.agent, t.steps, seed=cfg.seed,
                              norm=model.obs_norm if t.normalize_obs else None, eval_every=t.eval_every,
                              eval_episodes=t.eval_episodes, on_episode=bar.episode, resume=loop, on_update=on_update)
    return _finish(run_dir, log, cfg, start)


def _finish(run_dir: Path, log: TrainLog, cfg: RLConfig, start: float) -> dict[str, float]:
    """Write the learning curve and, for a mixture (K > 1), the experts' load at each evaluation; return the
    training metrics."""
    t = cfg.train
    _write_curve(run_dir, log, cfg.env)
    if log.eval_load and len(log.eval_load[0]) > 1:
        write_expert_load(run_dir, {"actor.gate": list(zip(log.eval_steps, log.eval_load, strict=True))},
                          {"actor.gate": len(log.eval_load[0])})
    metrics = {
        "train/auc": curve_auc(log.eval_steps, log.eval_returns, t.steps),
        "train/episodes": float(len(log.episode_returns)),
        "train/env_steps_per_s": t.steps / max(log.env_seconds, 1e-9),
        "train/updates_per_s": log.updates / max(log.update_seconds, 1e-9),
        "train/wall_seconds": time.perf_counter() - start,
    }
    if log.eval_returns:
        metrics["train/last_eval_return"] = log.eval_returns[-1]
    # The evaluation curve itself, so that boards can plot it from their results files.
    metrics.update({f"curve/{s}": r for s, r in zip(log.eval_steps, log.eval_returns, strict=True)})
    return metrics


def trace(cfg: RLConfig, module: RLModule, dm: EnvDataModule, steps: int) -> list[float]:
    """Golden trace: critic losses of ``steps`` updates on a buffer of random-action transitions (seed 0); PPO:
    the mean total loss of each of ``steps`` updates, each on a fresh 64-step rollout of 2 environments."""
    with torch_threads(1):
        return _trace(cfg, module, dm, steps)


def _trace(cfg: RLConfig, module: RLModule, dm: EnvDataModule, steps: int) -> list[float]:
    if cfg.algo == "ppo":
        agent, rng = module.model.agent, np.random.default_rng(0)
        envs = make_vector_env(cfg.env, 2)
        collector = RolloutCollector(envs, module.model.obs_norm, seed=0)
        losses = []
        for _ in range(steps):
            batch = collector.collect(agent, 32).batch(agent.cfg.gamma, agent.cfg.gae_lambda)
            losses.append(agent.update(batch, rng)["total"])
        envs.close()
        return losses
    agent, env = module.model.agent, dm.make_env(0)
    warmup = max(64, agent.cfg.batch_size)
    state = LoopState.fresh(env, agent, warmup, seed=0)
    train_off_policy(env, agent, warmup, state=state, start_steps=warmup, norm=module.model.obs_norm, seed=0)
    env.close()
    return [agent.update(state.buffer.sample(agent.cfg.batch_size, state.rng))["critic_loss"] for _ in range(steps)]
