"""RL policies: PMOE (probabilistic mixture-of-experts, Ren et al. 2021) for SAC and PPO.

Work in progress (issue 8): the Gaussian-mixture actor and PMOE's estimator (``policy.py``), the environment
factory with the two-goal task (``envs.py``) and the SAC update with its replay buffer (``sac.py``) exist and are
tested; the environment loop, PPO, the comparison estimators, training by name, evaluation, videos and the boards
do not yet, so no ``TaskSpec`` is registered.
"""
