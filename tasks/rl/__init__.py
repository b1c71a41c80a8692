"""RL policies: PMOE (probabilistic mixture-of-experts, Ren et al. 2021) for SAC and PPO.

Work in progress (issue 8): the Gaussian-mixture actor and PMOE's estimator (``policy.py``), the environment
factory with the two-goal task (``envs.py``), the SAC update with its replay buffer (``sac.py``) and the
off-policy loop with observation normalisation, deterministic evaluation and learning-curve AUC (``loop.py``)
exist and are tested; PPO, the comparison estimators, training by name (checkpoints, resume), videos and the
boards do not yet, so no ``TaskSpec`` is registered.
"""
