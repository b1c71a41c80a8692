"""The expert probe: the spread on a hand-worked example, what a probe measures against the actor and critic
directly, and the command writing its JSON and PNG from a short two-goal run."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")

from zoo.tasks.rl.config import SACConfig  # noqa: E402
from zoo.tasks.rl.diagnose import TWO_GOAL_PROBES, Probe, main, probe, probe_states  # noqa: E402
from zoo.tasks.rl.loop import RunningNorm  # noqa: E402
from zoo.tasks.rl.sac import SACAgent  # noqa: E402


def test_spread_is_the_largest_expert_distance_averaged_over_states():
    agree = [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]
    split = [[-0.6, 0.8], [0.6, 0.8], [0.0, 0.8]]  # largest pair distance 1.2
    assert Probe(0, [agree, split], [[0.0] * 3] * 2, [[1 / 3] * 3] * 2).spread == pytest.approx(0.6)


def test_probe_reads_each_experts_mean_action_its_q_and_the_gate():
    torch.manual_seed(0)
    agent = SACAgent(2, 2, SACConfig(num_experts=3, hidden=16))
    states = probe_states("TwoGoal-v0")
    norm = RunningNorm(2)
    norm.update(np.array([[1.0, 2.0], [3.0, -1.0]]))
    p = probe(agent, states, 7, norm)
    x = torch.from_numpy(norm.normalize(states))
    dist = agent.actor(x)
    assert p.step == 7 and np.asarray(p.mean_action).shape == (len(TWO_GOAL_PROBES), 3, 2)
    np.testing.assert_allclose(p.mean_action, torch.tanh(dist.mu).detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(p.weights, dist.weights.detach().numpy(), rtol=1e-6)
    q_expert_1 = agent.critic.min(x, torch.tanh(dist.mu[:, 1])).detach().numpy()
    np.testing.assert_allclose(np.asarray(p.q)[:, 1], q_expert_1, rtol=1e-5)


def test_command_writes_probes_over_a_short_run(tmp_path, capsys):
    out = tmp_path / "probe"
    overrides = ["--set", "train.start_steps=100", "--set", "sac.hidden=16", "--set", "sac.batch_size=32"]
    assert main(["pmoe-sac_k4_two-goal", "--steps", "300", "--every", "100", "--out", str(out), *overrides]) == 0
    probes = json.loads((out / "probes.json").read_text())
    assert [p["step"] for p in probes] == [0, 100, 200, 300]
    assert np.asarray(probes[-1]["weights"]).shape == (len(TWO_GOAL_PROBES), 4)
    assert (out / "probes.png").read_bytes().startswith(b"\x89PNG") and "spread" in capsys.readouterr().out


def test_command_refuses_a_ppo_recipe(tmp_path, capsys):
    assert main(["ppo_k1_hopper-v5", "--steps", "10", "--out", str(tmp_path)]) == 2
    assert "needs a SAC recipe" in capsys.readouterr().err
