"""RL policies: PMOE (probabilistic mixture-of-experts, Ren et al. 2021) for SAC and PPO.

Work in progress (issue 8): the Gaussian-mixture actor and PMOE's estimator (``policy.py``) and the environment
factory with the two-goal task (``envs.py``) exist and are tested; the SAC/PPO loops, training by name and the
boards do not yet, so no ``TaskSpec`` is registered.
"""
