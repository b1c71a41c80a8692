"""SAC with a PMOE actor (K = 1 is plain SAC): twin critics with Polyak-averaged targets, automatic entropy
tuning, and PMOE's best-of-K actor update (``policy.pmoe_losses``); a numpy replay buffer that can be saved with
a checkpoint.

Written here rather than taken from Stable-Baselines3: PMOE's actor step needs the critic on K candidate actions
per state and a second (gate) loss from the same sample, which SB3's ``SAC.train`` does not expose without
re-implementing it; the loop below is the ~100 lines that step needs, tested against known answers.
"""

from __future__ import annotations

import copy
import io
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ZooValueError, check_arg
from zoo.io import atomic_write_bytes

from .config import SACConfig
from .estimators import actor_losses
from .policy import GaussianMixturePolicy


class ReplayBuffer:
    """A fixed-size ring buffer of transitions in float32 numpy arrays."""

    def __init__(self, obs_dim: int, act_dim: int, size: int) -> None:
        check_arg(size >= 1, "buffer_size", size, "a positive int")
        self.obs = np.zeros((size, obs_dim), np.float32)
        self.next_obs = np.zeros((size, obs_dim), np.float32)
        self.act = np.zeros((size, act_dim), np.float32)
        self.rew = np.zeros(size, np.float32)
        self.done = np.zeros(size, np.float32)
        self.size, self.pos, self.full = size, 0, False

    def __len__(self) -> int:
        return self.size if self.full else self.pos

    def add(self, obs, act, rew: float, next_obs, done: bool) -> None:
        i = self.pos
        self.obs[i], self.act[i], self.rew[i], self.next_obs[i], self.done[i] = obs, act, rew, next_obs, float(done)
        self.pos = (i + 1) % self.size
        self.full = self.full or self.pos == 0

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        idx = rng.integers(0, len(self), size=batch_size)
        return {k: torch.from_numpy(getattr(self, k)[idx]) for k in self.FIELDS}

    FIELDS = ("obs", "act", "rew", "next_obs", "done")

    def save(self, path: str | os.PathLike) -> None:
        """Write the filled part and the ring position to an ``.npz`` file, atomically."""
        out = io.BytesIO()
        n = len(self)
        np.savez(out, **{k: getattr(self, k)[:n] for k in self.FIELDS},
                 meta=np.array([self.size, self.pos, int(self.full)], np.int64))
        atomic_write_bytes(path, out.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReplayBuffer:
        """Read a buffer written by ``save`` (plain arrays only: ``allow_pickle=False``)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                size, pos, full = (int(v) for v in data["meta"])
                buf = cls(data["obs"].shape[1], data["act"].shape[1], size)
                n = data["obs"].shape[0]
                for k in cls.FIELDS:
                    getattr(buf, k)[:n] = data[k]
        except (OSError, KeyError, ValueError) as err:
            raise ZooValueError(f"{path}: not a replay buffer saved by the zoo ({err})") from None
        buf.pos, buf.full = pos, bool(full)
        return buf


def mlp(inp: int, out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))


class TwinQ(nn.Module):
    """Two independent Q networks (2 hidden ReLU layers) evaluated as one: their weights are stacked ``[2, …]`` and
    each layer is one batched matmul, which halves the per-update kernel launches that dominate small-network SAC
    on CPU. Initialised as ``nn.Linear`` (uniform ±1/√fan_in)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int) -> None:
        super().__init__()
        dims = [obs_dim + act_dim, hidden, hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            bound = fan_in**-0.5
            self.weights.append(nn.Parameter(torch.empty(2, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(2, 1, fan_out).uniform_(-bound, bound)))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([obs, act], -1).expand(2, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.relu(h)
        q = h.squeeze(-1)
        return q[0], q[1]

    def min(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return torch.minimum(*self(obs, act))


class SACAgent(nn.Module):
    """Actor (PMOE mixture), twin critics and their targets, and the entropy temperature, with one ``update``."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig) -> None:
        super().__init__()
        self.cfg = cfg
        combine = "mean" if cfg.estimator == "mean" else "mixture"
        self.actor = GaussianMixturePolicy(obs_dim, act_dim, cfg.num_experts, cfg.hidden, combine=combine)
        self.critic = TwinQ(obs_dim, act_dim, cfg.hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(float(np.log(cfg.init_alpha))))
        self.target_entropy = -float(act_dim) if cfg.target_entropy is None else cfg.target_entropy
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, fused=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.lr)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers a checkpoint saves beside the state dict."""
        return {"actor": self.actor_opt, "critic": self.critic_opt, "alpha": self.alpha_opt}

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp().detach()

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step of critic, actor (+ gate) and temperature, then the Polyak target update."""
        cfg, alpha = self.cfg, self.alpha
        with torch.no_grad():  # target: r + γ(1 − d)(min Q'(s', a') − α log π_{k'}(a'|s')), k' ~ Cat(w(s'))
            next_act, next_logp, _ = self.actor.sample(batch["next_obs"])
            next_q = self.critic_target.min(batch["next_obs"], next_act) - alpha * next_logp
            target = batch["rew"] + cfg.gamma * (1 - batch["done"]) * next_q
        q1, q2 = self.critic(batch["obs"], batch["act"])
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()

        self.critic.requires_grad_(False)  # the actor step differentiates through Q w.r.t. actions only
        losses = actor_losses(cfg.estimator, self.actor, self.critic.min, batch["obs"], alpha)
        self.actor_opt.zero_grad()
        (losses.actor + losses.gate).backward()
        self.actor_opt.step()
        self.critic.requires_grad_(True)

        alpha_loss = self.log_alpha * (losses.entropy - self.target_entropy)
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()

        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters(), strict=True):
                tp.lerp_(p, cfg.tau)
        return {"critic_loss": float(critic_loss.detach()), "actor_loss": float(losses.actor.detach()),
                "gate_loss": float(losses.gate.detach()),
                "alpha": float(self.alpha), "entropy": float(losses.entropy)}
