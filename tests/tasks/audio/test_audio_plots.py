"""The audio task's figures: the board figure from results (specialists as lines, MoE rows against experts used)
and the examples figure of a tiny untrained decoder."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("torchaudio")
pytest.importorskip("matplotlib")

from zoo.errors import ZooValueError  # noqa: E402
from zoo.moe.config import MoEConfig  # noqa: E402
from zoo.registry import TASKS  # noqa: E402
from zoo.task import LoadedModel  # noqa: E402
from zoo.tasks.audio import plots  # noqa: E402
from zoo.tasks.audio.codec import N_MELS  # noqa: E402
from zoo.tasks.audio.config import AudioConfig, EvalConfig, ModelConfig  # noqa: E402
from zoo.tasks.audio.module import build_module  # noqa: E402

NAN = (math.nan, math.nan)


def _stats() -> dict[str, dict[str, tuple[float, float]]]:
    return {
        "dense_speech": {"test/speech_nll": (4.5, 0.01), "test/music_nll": NAN, "test/active_experts": NAN},
        "dense_music": {"test/speech_nll": NAN, "test/music_nll": (4.6, 0.02), "test/active_experts": NAN},
        "dense_joint": {"test/speech_nll": (4.4, 0.01), "test/music_nll": (4.7, 0.03), "test/active_experts": NAN},
        "top2": {"test/speech_nll": (4.45, 0.01), "test/music_nll": (4.65, 0.02), "test/active_experts": (2.0, 0.0)},
        "unimoe": {"test/speech_nll": (4.3, 0.02), "test/music_nll": (4.5, 0.02), "test/active_experts": (2.6, 0.1)},
    }


def test_board_figure_draws_specialists_as_lines_and_moe_rows_against_experts():
    fig = plots.board_figure("audio.speech-music", _stats())
    joint, routed = fig.axes
    assert {round(line.get_xdata()[0], 3) for line in joint.lines if line.get_linestyle() == "--"} >= {4.5}
    assert {round(line.get_ydata()[0], 3) for line in joint.lines if line.get_linestyle() == "--"} >= {4.6}
    labels = {t.get_text() for t in joint.texts}
    assert labels == {"dense_joint", "top2", "unimoe"}  # rows with both tasks are points
    assert {t.get_text() for t in routed.texts} == {"top2", "unimoe"}  # only MoE rows have experts per token


def test_row_stats_without_results_is_one_line(monkeypatch):
    from zoo import leaderboard

    monkeypatch.setattr(leaderboard, "load_results", lambda board, tier: {})
    with pytest.raises(ZooValueError, match="no full results: run `zoo leaderboard reproduce"):
        plots.row_stats("audio.speech-music", "full")


def test_row_stats_mean_and_std_over_seeds(monkeypatch):
    from zoo import leaderboard

    runs = [{"metrics": {"test/speech_nll": v, "test/music_nll": 5.0}} for v in (4.0, 4.2)]
    monkeypatch.setattr(leaderboard, "load_results", lambda board, tier: {"top2": runs})
    stats = plots.row_stats("audio.speech-music", "full")
    assert list(stats) == ["top2"]
    assert stats["top2"]["test/speech_nll"] == pytest.approx((4.1, 0.1))
    assert stats["top2"]["test/music_nll"] == pytest.approx((5.0, 0.0))
    assert all(math.isnan(v) for v in stats["top2"]["test/active_experts"])


def test_examples_figure_has_four_spectrograms():
    torch.manual_seed(0)
    cfg = AudioConfig(model=ModelConfig(d_model=32, layers=1, heads=2, ffn="moe", max_len=256),
                      moe=MoEConfig(num_experts=4, k=1, d_hidden=16, router="top_p", router_kwargs={"p": 0.7},
                                    num_null=1, num_shared=1),
                      eval=EvalConfig(max_frames=16, temperature=1.0, top_k=32))
    info = {"codebooks": torch.randn(4, 256, N_MELS, generator=torch.Generator().manual_seed(1)),
            "tasks": ["speech", "music"]}
    fig = plots.examples_figure(LoadedModel(TASKS.get("audio"), cfg, build_module(cfg, info), info))
    assert len(fig.axes) == 4
    assert all(ax.images and ax.images[0].get_array().shape[0] == N_MELS for ax in fig.axes)
    assert "held out" in fig.axes[0].get_title() and "played" in fig.axes[3].get_title()
