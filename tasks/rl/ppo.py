"""PPO with a PMOE actor (Ren et al. 2021, arXiv 2104.09122, "PPO version"), and the
on-policy loop over a gymnasium vector environment. K = 1 is plain PPO with a tanh-squashed Gaussian actor.

What is implemented (one update = ``epochs`` passes of shuffled minibatches over one rollout):

* Actor: :class:`~.policy.GaussianMixturePolicy` ``π(a|s) = Σ_k w_k(s) π_k(a|s)``. Acting samples ``k ~ Cat(w)``
  then ``a ~ π_k``; the behaviour log-likelihood stored with each action is the *mixture* density
  ``log π(a|s)`` (``policy.log_prob``), not the density of the expert that happened to act: the action's
  probability under the policy does not depend on which component drew it.
* Policy loss: PPO's clipped surrogate (Schulman et al. 2017) ``−E[min(ρ Â, clip(ρ, 1 ± ε) Â)]`` with
  ``ρ = exp(log π_θ(a|s) − log π_old(a|s))`` from the mixture likelihood, so the surrogate's gradient reaches the
  experts *and* the gate. Advantages are standardised per minibatch (``norm_adv``, on by default: SB3, CleanRL's
  ``ppo_continuous_action`` and the reference do the same).
* Reward scaling (``norm_reward``, off by default as SB3's PPO): :class:`ReturnScaler`, gymnasium's vector
  ``NormalizeReward`` (which CleanRL's ``ppo_continuous_action`` wraps around its environments) computed in the
  collector, so that its statistics travel in checkpoints: every environment keeps a discounted return
  ``G ← γ(1 − terminated)G + r`` (zeroed when its episode ends), the running variance of all ``G`` is updated each
  step, and the stored reward is ``r / sqrt(var + 1e-8)``. Episode returns are logged unscaled.
* Value: ``V(s)`` (``sac.mlp``), loss ``vf_coef · mean (V(s) − R)²`` without value clipping (SB3's default).
  ``R = Â + V_old(s)`` is the TD(λ) return of GAE (Schulman et al. 2016).
* PMOE's Q-net ``Q(s, a)`` (``sac.mlp`` on ``[s, a]``) regresses the same λ-returns of the *taken* actions
  (``mean (Q(s, a) − R)²``, its own Adam at ``q_lr``). Its only job is to pick, per state of the minibatch,
  ``k* = argmax_k Q(s, a_k)`` over one action ``a_k = tanh(μ_k + σ_k ε_k)`` drawn from every expert of the current
  policy (no gradient flows through Q or the draws).
* PMOE's frequency loss ``freq_coef · (1/K) Σ_k (w_k(s) − 1[k = k*])²`` (``policy.frequency_loss``) on the gate.
* Entropy bonus (off by default, as SB3's and CleanRL's MuJoCo PPO): the mixture of squashed Gaussians has no
  closed-form entropy; ``ent_coef`` multiplies the gate-weighted entropies of the experts' pre-tanh Gaussians
  ``Σ_k sg(w_k) H(N(μ_k, σ_k))`` (``sg`` = stop-gradient, so the bonus never pushes the gate toward the widest
  expert). For K = 1 that is the entropy SB3 uses for an unsquashed Gaussian.
* One Adam (``lr``, eps 1e-5) for actor + value with the total norm of their gradient clipped at
  ``max_grad_norm``; the Q-net has its own Adam and clipping (its loss shares no parameter with the others).

K = 1: the gate is the constant 1, the frequency loss is identically zero and the Q-net is neither trained nor
queried (it could not change anything), so the update is exactly PPO's with a tanh-Gaussian actor.

Readings of paper and reference (``quantumiracle/Popular-RL-Algorithms`` ``pmoe_ppo.py``, believed to be a
co-author's) that had to be made:

* Ratio: the paper uses the mixture likelihood in the ratio. The reference computes
  ``Normal(mean[K, A], std).log_prob(a).sum(-1)`` with an open to-do comment about the other entries — a per-component
  density, not the mixture. We use the mixture density, which is the likelihood of the behaviour policy.
* Q-net target: the reference regresses ``Q(s, a)`` on ``advantage + V`` (GAE's λ-return); so do we.
* Candidate actions for ``k*``: the reference intends "one action per expert" but passes the stored action
  (``get_action_and_value(bs, ba, select_from_mixture=False)`` returns ``ba``), which cannot rank experts. We
  draw a fresh action from each expert of the current policy, as PMOE-SAC does (``policy.sample_all``).
* The reference keeps PPO's surrogate as the only expert loss (no "train only k*" term as in PMOE-SAC); so do we:
  in PPO, ``k*`` shapes the gate only. The reference adds the coefficient loss with weight 1 (``freq_coef``).
* The reference's Gaussians are unsquashed with a state-independent log-std and clipped actions; ours are the
  shared tanh-squashed heads of ``policy.py`` with state-dependent log-std (one actor for SAC and PPO).
* Not taken from the reference: value-loss clipping. Its reward normalisation (``NormalizeReward``) is the
  ``norm_reward`` option, off by default: rewards are used raw, so on MuJoCo the value and Q targets are in return
  units (hundreds).

Loop (:func:`train_on_policy`): ``gymnasium.vector.SyncVectorEnv`` of ``make_env`` thunks. Synchronous, not
``AsyncVectorEnv``: one MuJoCo step costs tens of microseconds, while an async step costs a pipe round trip and
pickling per sub-environment plus a process per environment competing for the same 2 cores as the learner, so
async would be slower here; the policy forward is batched over the ``num_envs`` observations either way.
The vector env runs in gymnasium's ``SAME_STEP`` autoreset mode (gymnasium ≥ 1.1): a step that ends an episode
returns the *reset* observation and puts the true last observation in ``info["final_obs"]``. (The default
``NEXT_STEP`` mode instead returns the last observation and spends the next ``step`` call on the reset, with a
dummy zero-reward transition that would have to be masked out of every rollout.) GAE then bootstraps a
*truncated* step from ``V(final_obs)`` and a *terminated* step from zero, and cuts the λ-sum at either.

Checkpoints: ``agent.state_dict()`` holds all four networks (tensors only, so it publishes as safetensors) and
``agent.optimizers()`` both optimizers, saved beside it by the task's training (``training.py``) together with the
loop's state at a rollout boundary (:func:`train_on_policy`'s ``on_update``): the step, the log, every RNG (python,
numpy's global and the minibatch generator, torch), the reward scaler and each environment mid-episode
(``envs.env_state``: its RNG, time-limit counter and simulator state) with the observation it is at. A run resumed
from it (``zoo train rl --resume RUN``) continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ZooError, ZooValueError, check_arg

from .config import PPOConfig
from .envs import env_state, make_env, set_env_state
from .loop import RunningNorm, TrainLog, _check_obs, record_evaluation
from .policy import GaussianMixturePolicy, frequency_loss
from .sac import mlp

_HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)


def clipped_surrogate(logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO's clipped policy loss ``−mean min(ρ Â, clip(ρ, 1 − ε, 1 + ε) Â)``, ``ρ = exp(logp − logp_old)``; all ``[B]``."""
    ratio = torch.exp(logp - logp_old)
    return -torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a rollout; every argument ``[T, N]`` (steps × environments).

    ``next_values[t]`` is ``V`` of the state reached by step ``t`` (for a truncated step, of the episode's true
    last observation, not of the reset one); ``terminated`` zeroes that bootstrap, ``dones`` (terminated or
    truncated) cuts the λ-sum. Returns advantages and λ-returns ``Â + V``, both ``[T, N]``.
    """
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * (1 - terminated[t]) * next_values[t] - values[t]
        running = delta + gamma * lam * (1 - dones[t]) * running
        adv[t] = running
    return adv, adv + values


@dataclass
class PPOLosses:
    """One minibatch's losses (scalars): ``total`` = policy + vf·value − ent·entropy + freq·frequency (actor and
    value parameters), ``q`` (the Q-net's own), and the expert ``best[B]`` the Q-net picked (None for K = 1)."""

    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    frequency: torch.Tensor
    q: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor
    best: torch.Tensor | None


class PPOAgent(nn.Module):
    """PMOE-PPO: mixture actor, ``V(s)``, the expert-picking ``Q(s, a)`` and their optimizers (module docstring)."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: PPOConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else PPOConfig()
        for name in ("epochs", "minibatch", "rollout", "num_envs"):
            value = getattr(cfg, name)
            check_arg(isinstance(value, int) and value >= 1, name, value, "a positive int")
        self.cfg, self.obs_dim, self.act_dim = cfg, obs_dim, act_dim
        self.actor = GaussianMixturePolicy(obs_dim, act_dim, cfg.num_experts, cfg.hidden)
        self.value = mlp(obs_dim, 1, cfg.hidden)
        self.q = mlp(obs_dim + act_dim, 1, cfg.hidden)
        self.opt = torch.optim.Adam([*self.actor.parameters(), *self.value.parameters()], lr=cfg.lr, eps=1e-5)
        self.q_opt = torch.optim.Adam(self.q.parameters(), lr=cfg.q_lr, eps=1e-5)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers a checkpoint saves beside the state dict (which holds tensors only: safetensors)."""
        return {"policy": self.opt, "q": self.q_opt}

    # -- acting ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def explore(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rollout step for ``obs[N, O]``: a sampled action ``[N, A]`` in (−1, 1), its mixture log-density ``[N]``
        and ``V(s)`` ``[N]``."""
        action, _, _ = self.actor.sample(obs)
        return action, self.actor.log_prob(obs, action), self.value(obs).squeeze(-1)

    @torch.no_grad()
    def state_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value(obs).squeeze(-1)

    @torch.no_grad()
    def best_expert(self, obs: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
        """``k* = argmax_k Q(s, a_k)`` ``[B]`` for one action ``a_k ~ π_k(·|s)`` per expert (``mu, log_std[B, K, A]``)."""
        actions = torch.tanh(mu + log_std.exp() * torch.randn_like(mu))
        B, K, _ = actions.shape
        q = self.q(torch.cat([obs.unsqueeze(1).expand(B, K, obs.shape[-1]), actions], -1)).squeeze(-1)
        return q.argmax(-1)

    # -- learning --------------------------------------------------------------------------------------------
    def losses(self, obs: torch.Tensor, act: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor,
               ret: torch.Tensor) -> PPOLosses:
        """Losses of one minibatch: ``obs[B, O]``, ``act[B, A]`` in (−1, 1), behaviour ``logp_old[B]``, raw
        advantages ``adv[B]`` (normalised here) and λ-returns ``ret[B]``."""
        cfg = self.cfg
        if cfg.norm_adv and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        logp = self.actor.log_prob(obs, act)
        policy = clipped_surrogate(logp, logp_old, adv, cfg.clip)
        value = F.mse_loss(self.value(obs).squeeze(-1), ret)
        dist = self.actor(obs)
        weights = dist.weights
        entropy = (weights.detach() * (_HALF_LOG_2PI_E + dist.log_std).sum(-1)).sum(-1).mean()
        zero = logp.new_zeros(())
        best = None
        if self.actor.num_experts > 1:
            q = F.mse_loss(self.q(torch.cat([obs, act], -1)).squeeze(-1), ret)
            best = self.best_expert(obs, dist.mu, dist.log_std)
            freq = frequency_loss(weights, best)
        else:
            q, freq = zero, zero
        total = policy + cfg.vf_coef * value - cfg.ent_coef * entropy + cfg.freq_coef * freq
        with torch.no_grad():
            log_ratio = logp - logp_old
            approx_kl = ((log_ratio.exp() - 1) - log_ratio).mean()  # Schulman's low-variance KL estimator
            clip_fraction = ((log_ratio.exp() - 1).abs() > cfg.clip).float().mean()
        return PPOLosses(total, policy, value, entropy, freq, q, approx_kl, clip_fraction, best)

    def update(self, batch: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, float]:
        """``epochs`` passes of shuffled minibatches over a flat rollout ``batch`` (keys ``obs, act, logp, adv,
        ret``, leading dim M). Returns the mean of each loss and ``gradient_steps``."""
        cfg = self.cfg
        n = batch["obs"].shape[0]
        sums: dict[str, float] = {}
        steps = 0
        for _ in range(cfg.epochs):
            order = torch.from_numpy(rng.permutation(n))
            for start in range(0, n, cfg.minibatch):
                idx = order[start:start + cfg.minibatch]
                out = self.losses(batch["obs"][idx], batch["act"][idx], batch["logp"][idx], batch["adv"][idx],
                                  batch["ret"][idx])
                self.opt.zero_grad()
                out.total.backward()
                nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], cfg.max_grad_norm)
                self.opt.step()
                if out.q.requires_grad:
                    self.q_opt.zero_grad()
                    out.q.backward()
                    nn.utils.clip_grad_norm_(self.q.parameters(), cfg.max_grad_norm)
                    self.q_opt.step()
                steps += 1
                for key in ("total", "policy", "value", "entropy", "frequency", "q", "approx_kl", "clip_fraction"):
                    sums[key] = sums.get(key, 0.0) + float(getattr(out, key).detach())
        return {**{k: v / max(steps, 1) for k, v in sums.items()}, "gradient_steps": steps}


# -- the vector environment and the rollout ---------------------------------------------------------------------
def make_vector_env(env_id: str, num_envs: int) -> gym.vector.SyncVectorEnv:
    """``num_envs`` copies of ``make_env(env_id)`` in one ``SyncVectorEnv`` in ``SAME_STEP`` autoreset mode."""
    check_arg(isinstance(num_envs, int) and num_envs >= 1, "num_envs", num_envs, "a positive int")
    return vectorize([lambda: make_env(env_id) for _ in range(num_envs)])


def vectorize(thunks: list[Callable[[], gym.Env]]) -> gym.vector.SyncVectorEnv:
    """A ``SyncVectorEnv`` of the given environment factories in ``SAME_STEP`` autoreset mode."""
    mode = getattr(getattr(gym.vector, "AutoresetMode", None), "SAME_STEP", None)
    if mode is None:
        raise ZooError(f"PPO needs gymnasium>=1.1 (same-step autoreset), found {gym.__version__}; "
                       "run: pip install -U 'gymnasium>=1.1'")
    return gym.vector.SyncVectorEnv(thunks, autoreset_mode=mode)


class ReturnScaler:
    """Reward scaling of gymnasium's vector ``NormalizeReward`` in same-step autoreset mode (module docstring): one
    discounted return per environment, the running variance of those returns, rewards divided by its square root."""

    def __init__(self, num_envs: int, gamma: float, epsilon: float = 1e-8) -> None:
        self.gamma, self.epsilon = gamma, epsilon
        self.returns = np.zeros(num_envs)
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def __call__(self, reward: np.ndarray, terminated: np.ndarray, done: np.ndarray) -> np.ndarray:
        """The scaled rewards of one vector step (``done``: terminated or truncated)."""
        self.returns = self.returns * self.gamma * (1 - np.asarray(terminated, np.float64)) + reward
        n, mean, var = self.returns.size, float(self.returns.mean()), float(self.returns.var())
        delta, total = mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + var * n + delta**2 * self.count * n / total) / total
        self.count = total
        self.returns[np.asarray(done, bool)] = 0.0
        return np.asarray(reward, np.float64) / np.sqrt(self.var + self.epsilon)

    def state(self) -> dict[str, Any]:
        return {"returns": torch.from_numpy(self.returns.copy()), "mean": self.mean, "var": self.var,
                "count": self.count}

    def load_state(self, state: dict[str, Any]) -> None:
        self.returns = state["returns"].numpy().copy()
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]


@dataclass
class Rollout:
    """``T`` steps of ``N`` environments: ``obs[T, N, O]`` (normalised, as the networks saw them), ``act[T, N, A]``
    in (−1, 1), and ``[T, N]`` ``logp`` (mixture), ``rewards``, ``values``, ``next_values`` (V of the state each
    step reached; of ``final_obs`` on truncation), ``terminated`` and ``dones`` (terminated or truncated)."""

    obs: torch.Tensor
    act: torch.Tensor
    logp: torch.Tensor
    rewards: torch.Tensor
    values: torch.Tensor
    next_values: torch.Tensor
    terminated: torch.Tensor
    dones: torch.Tensor

    def batch(self, gamma: float, lam: float) -> dict[str, torch.Tensor]:
        """Flatten to ``[T·N, ...]`` with GAE advantages and λ-returns, as :meth:`PPOAgent.update` takes it."""
        adv, ret = gae(self.rewards, self.values, self.next_values, self.terminated, self.dones, gamma, lam)
        return {"obs": self.obs.flatten(0, 1), "act": self.act.flatten(0, 1), "logp": self.logp.flatten(),
                "adv": adv.flatten(), "ret": ret.flatten()}


class RolloutCollector:
    """Steps a vector env with the agent's stochastic policy, ``T`` steps at a time, keeping the observations and
    the running episode returns between rollouts. ``norm`` (if given) is updated with every observation the
    policy acts on, before normalising it; ``scaler`` (if given) scales the rewards stored for learning;
    non-finite observations raise a one-line ``ZooValueError``."""

    def __init__(self, envs: gym.vector.VectorEnv, norm: RunningNorm | None = None, seed: int | None = None,
                 scaler: ReturnScaler | None = None) -> None:
        self.envs, self.norm, self.scaler = envs, norm, scaler
        self.num_envs = envs.num_envs
        self.scale = np.asarray(envs.single_action_space.high, np.float32)
        obs, _ = envs.reset(seed=seed)
        self.obs = _check_obs(np.asarray(obs, np.float64), "reset")
        self.episode_returns = np.zeros(self.num_envs)
        self.steps = 0

    def _normalize(self, raw: np.ndarray, update: bool) -> torch.Tensor:
        if self.norm is None:
            return torch.from_numpy(raw.astype(np.float32))
        if update:
            self.norm.update(raw)
        return torch.from_numpy(self.norm.normalize(raw))

    def collect(self, agent: PPOAgent, T: int, log: TrainLog | None = None,
                on_episode: Callable[[int, float], None] | None = None) -> Rollout:
        N, A = self.num_envs, self.scale.shape[0]
        obs = torch.zeros(T, N, self.obs.shape[1])
        act = torch.zeros(T, N, A)
        logp, rewards, values, terminated, dones = (torch.zeros(T, N) for _ in range(5))
        truncated_at: list[tuple[int, int, torch.Tensor]] = []  # (t, env, normalised final_obs)
        for t in range(T):
            x = self._normalize(self.obs, update=True)
            a, lp, v = agent.explore(x)
            obs[t], act[t], logp[t], values[t] = x, a, lp, v
            raw, r, term, trunc, info = self.envs.step(a.numpy() * self.scale)
            self.steps += N
            self.obs = _check_obs(np.asarray(raw, np.float64), f"step {self.steps}")
            done = np.logical_or(term, trunc)
            scaled = self.scaler(r, term, done) if self.scaler is not None else r
            rewards[t] = torch.from_numpy(np.asarray(scaled, np.float32))
            terminated[t] = torch.from_numpy(np.asarray(term, np.float32))
            dones[t] = torch.from_numpy(done.astype(np.float32))
            self.episode_returns += r
            for i in np.flatnonzero(done):
                if trunc[i] and not term[i]:
                    final = _check_obs(np.asarray(info["final_obs"][i], np.float64)[None], f"step {self.steps}")
                    truncated_at.append((t, int(i), self._normalize(final, update=False)[0]))
                if log is not None:
                    log.episode_returns.append(float(self.episode_returns[i]))
                if on_episode is not None:
                    on_episode(self.steps, float(self.episode_returns[i]))
                self.episode_returns[i] = 0.0
        next_values = torch.cat([values[1:], agent.state_value(self._normalize(self.obs, update=False))[None]])
        if truncated_at:
            bootstrap = agent.state_value(torch.stack([x for _, _, x in truncated_at]))
            for (t, i, _), v in zip(truncated_at, bootstrap, strict=True):
                next_values[t, i] = v
        return Rollout(obs, act, logp, rewards, values, next_values, terminated, dones)

    def state(self) -> dict[str, Any]:
        """Where the collector is between rollouts: each environment mid-episode, the observation it is at, the
        running episode returns, the step count and the reward scaler's statistics."""
        return {"obs": torch.from_numpy(self.obs.copy()), "episode_returns": torch.from_numpy(self.episode_returns.copy()),
                "steps": self.steps, "envs": [env_state(env) for env in self.envs.envs],
                "scaler": self.scaler.state() if self.scaler is not None else None}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from ``state()`` on a freshly reset vector env of the same environments."""
        self.obs, self.steps = state["obs"].numpy().copy(), int(state["steps"])
        self.episode_returns = state["episode_returns"].numpy().copy()
        for env, saved in zip(self.envs.envs, state["envs"], strict=True):
            set_env_state(env, saved)
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state(state["scaler"])


def _global_rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "torch": torch.get_rng_state()}


def _set_global_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])


def train_on_policy(
    env_id: str,
    agent: PPOAgent,
    steps: int,
    *,
    num_envs: int | None = None,
    seed: int = 0,
    norm: RunningNorm | None = None,
    eval_every: int = 10_000,
    eval_episodes: int = 10,
    on_episode: Callable[[int, float], None] | None = None,
    resume: dict[str, Any] | None = None,
    on_update: Callable[[int, Callable[[], dict[str, Any]]], None] | None = None,
) -> TrainLog:
    """Train ``agent`` with PPO for ``steps`` environment steps (rounded up to a multiple of ``num_envs``, default
    ``agent.cfg.num_envs``) on ``num_envs`` synchronous copies of ``env_id``.

    Each update uses ``cfg.rollout // num_envs`` steps per environment (the last rollout may be shorter).
    ``loop.record_evaluation`` runs ``eval_episodes`` deterministic episodes on a separate environment at every multiple
    ``s`` of ``eval_every`` up to the last step, on the policy that acts at step ``s + 1`` (the one after the
    updates of the first ``s`` steps), so PPO's curve lies on the same grid as SAC's. ``TrainLog.updates`` counts
    minibatch gradient steps; ``env_seconds`` includes the policy's forward while acting, ``update_seconds`` GAE
    and the gradient steps. Deterministic for a given ``seed`` and initial agent on CPU: the global torch RNG is
    seeded inside ``torch.random.fork_rng``, so the caller's RNG state is left as it was.

    Args:
        resume: a loop state made by ``on_update``'s ``snapshot`` (and the agent and ``norm`` of the same moment):
            the run continues from that rollout boundary exactly as it would have without the interruption.
        on_update: called after every update as ``on_update(steps_done, snapshot)``; ``snapshot()`` returns the
            loop state to checkpoint (plain values and tensors).
    """
    if steps < 1:
        raise ZooValueError(f"steps={steps} must be positive")
    cfg = agent.cfg
    num_envs = cfg.num_envs if num_envs is None else num_envs
    check_arg(isinstance(num_envs, int) and 1 <= num_envs <= cfg.rollout, "num_envs", num_envs,
              f"an int in [1, rollout={cfg.rollout}]")
    check_arg(isinstance(eval_every, int) and eval_every >= 1, "eval_every", eval_every, "a positive int")
    envs = make_vector_env(env_id, num_envs)
    eval_env = make_env(env_id)
    log = TrainLog(**resume["log"]) if resume is not None else TrainLog()
    rng = np.random.default_rng(seed)
    per_env = cfg.rollout // num_envs

    def evaluate_until(lo: int, hi: int) -> None:  # every multiple of eval_every in [lo, hi) not evaluated yet
        lo = max(lo, log.eval_steps[-1] + 1 if log.eval_steps else 0)
        for s in range(max(eval_every, -(-lo // eval_every) * eval_every), hi, eval_every):
            record_evaluation(log, s, eval_env, agent.actor, eval_episodes, norm, seed=10_000 + s)

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            scaler = ReturnScaler(num_envs, cfg.gamma) if cfg.norm_reward else None
            collector = RolloutCollector(envs, norm, seed, scaler)
            if resume is not None:
                collector.load_state(resume["collector"])
                rng.bit_generator.state = resume["rng"]
                _set_global_rng_state(resume["global_rng"])

            def snapshot() -> dict[str, Any]:
                return {"algo": "ppo", "step": collector.steps, "log": asdict(log), "rng": rng.bit_generator.state,
                        "global_rng": _global_rng_state(), "collector": collector.state()}

            remaining = math.ceil(steps / num_envs) - collector.steps // num_envs
            while remaining > 0:
                T = min(per_env, remaining)
                evaluate_until(collector.steps, collector.steps + T * num_envs)
                t0 = time.perf_counter()
                rollout = collector.collect(agent, T, log, on_episode)
                log.env_seconds += time.perf_counter() - t0
                remaining -= T
                t0 = time.perf_counter()
                info = agent.update(rollout.batch(cfg.gamma, cfg.gae_lambda), rng)
                log.update_seconds += time.perf_counter() - t0
                log.updates += info["gradient_steps"]
                if on_update is not None:
                    on_update(collector.steps, snapshot)
            evaluate_until(collector.steps, collector.steps + 1)
    finally:
        envs.close()
        eval_env.close()
    return log
