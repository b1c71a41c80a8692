"""The RL task's pieces in the zoo's flow: the environment "datamodule", the published model (agent + observation
normaliser) and a thin LightningModule holding it.

RL has no dataset, so ``EnvDataModule`` only names the environment, reads its spaces and makes instances; the
LightningModule is not fitted by a Trainer (the task's ``train`` runs the environment loop) but gives publishing,
evaluation and checkpoints the same ``module.model`` every task has.
"""

from __future__ import annotations

import lightning as L
from torch import nn

from .config import RLConfig
from .envs import make_env
from .loop import RunningNorm
from .policy import GaussianMixturePolicy
from .ppo import PPOAgent
from .sac import SACAgent


class EnvDataModule(L.LightningDataModule):
    """The environment ``env_id``: its observation and action sizes (read once in ``setup``) and a factory."""

    def __init__(self, env_id: str) -> None:
        super().__init__()
        self.env_id = env_id
        self.obs_dim = self.act_dim = 0

    def setup(self, stage: str | None = None) -> None:
        if self.obs_dim:
            return
        probe = make_env(self.env_id)
        self.obs_dim, self.act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
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


def build_module(cfg: RLConfig, dm: EnvDataModule) -> RLModule:
    return RLModule(RLModel(dm.obs_dim, dm.act_dim, cfg))
