"""Task packages, imported as ``zoo.tasks.<name>`` (setup.py maps this folder into the ``zoo`` package).

Each task (forecasting, stocks, video_anomaly, detection, nerf, rl, graph, recsys, audio) builds its models
from ``zoo.moe`` parts and trains through ``zoo.module.ZooModule``; see docs/architecture.md for the layout of a task.
"""
