"""The RL task's pieces in the zoo's flow: the environment "datamodule", the model info read from it, the
published model (agent + observation normaliser) and a thin LightningModule holding it.

RL has no dataset, so ``EnvDataModule`` only names the environment, reads its spaces and makes instances; the
model info keeps the sizes and the action scale of those spaces, so weights rebuild their network without making
the environment. The LightningModule is not fitted by a Trainer (the task's ``train`` runs the environment loop) but
gives publishing, evaluation and checkpoints the same ``module.model`` every task has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from torch import nn

from zoo.errors import ZooValueError

from .config import RLConfig
from .envs import make_env
from .loop import RunningNorm
from .policy import GaussianMixturePolicy
from .ppo import PPOAgent
from .sac import SACAgent


class EnvDataModule(L.LightningDataModule):
    """The environment ``env_id``: its observation and action sizes and the action scale (the action space's
    upper bounds; acting multiplies the actor's (−1, 1) output by it), read once in ``setup``, and a factory."""

    def __init__(self, env_id: str) -> None:
        super().__init__()
        self.env_id = env_id
        self.obs_dim = self.act_dim = 0
        self.action_high: list[float] = []

    def setup(self, stage: str | None = None) -> None:
        if self.obs_dim:
            return
        probe = make_env(self.env_id)
        self.obs_dim, self.act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
        self.action_high = [float(x) for x in probe.action_space.high]
        probe.close()

    def make_env(self, seed: int | None = None, render_mode: str | None = None):
        return make_env(self.env_id, seed=seed, render_mode=render_mode)


class RLModel(nn.Module):
    """What a checkpoint and a published weight hold: the agent (SAC: actor, twin critics and their targets,
    temperature; PPO: actor, value and expert-picking Q networks) and the running observation statistics the actor
    was trained on."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: RLConfig) -> None:
        super().__init__()
        if cfg.algo == "ppo":
            self.agent: SACAgent | PPOAgent = PPOAgent(obs_dim, act_dim, cfg.ppo)
        else:
            self.agent = SACAgent(obs_dim, act_dim, cfg.sac)
        self.obs_norm = RunningNorm(obs_dim)

    @property
    def actor(self) -> GaussianMixturePolicy:
        return self.agent.actor


class RLModule(L.LightningModule):
    def __init__(self, model: RLModel) -> None:
        super().__init__()
        self.model = model


INFO_KEYS = ("obs_dim", "act_dim", "action_high")


def build_datamodule(cfg: RLConfig) -> EnvDataModule:
    return EnvDataModule(cfg.env)


def model_info(cfg: RLConfig, dm: EnvDataModule) -> dict[str, Any]:
    """The environment's observation and action sizes (the network's input and output) and its action scale (what
    ``predict`` checks an environment against)."""
    return {"obs_dim": dm.obs_dim, "act_dim": dm.act_dim, "action_high": dm.action_high}


def build_module(cfg: RLConfig, info: Mapping[str, Any]) -> RLModule:
    """The agent sized from the model info alone (no environment is made)."""
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise ZooValueError(f"RL model info lacks {', '.join(missing)}; republish the weights from their run")
    return RLModule(RLModel(int(info["obs_dim"]), int(info["act_dim"]), cfg))
