"""The picture of ``zoo predict rl --plot``: each episode's return, and the gate's weights ``w_k(s)`` over every step
the agent took, so a reader sees which expert acts when (and whether the mixture uses more than one)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

MIN_LABELLED_SHARE = 0.06  # an episode narrower than this share of the heatmap gets no "ep i" label (no overlap)


def routing_png(env_id: str, returns: Sequence[float], weights: Sequence[np.ndarray],
                reached: Sequence[bool] | None = None) -> bytes:
    """A PNG of two panels: returns per episode (bars, green/grey by goal reached on goal tasks) and the gate weights
    ``[K, steps]`` of all episodes one after another as a heatmap, episodes separated by white lines, with the
    acting (most probable) expert traced over it.

    Args:
        env_id: the environment, for the title.
        returns: one return per episode.
        weights: one ``[T, K]`` array of gate weights per episode.
        reached: whether each episode reached a goal (goal tasks), else None.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    num_experts = weights[0].shape[1]
    heat = np.concatenate(weights).T  # [K, total steps]
    ends = np.cumsum([len(w) for w in weights])
    fig = Figure(figsize=(9.0, 3.2 + 0.28 * num_experts))
    bars_ax, heat_ax = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1.0, 0.6 + 0.12 * num_experts]})

    episodes = np.arange(len(returns))
    if reached is None:
        bars_ax.bar(episodes, returns, color="tab:blue")
    else:
        bars_ax.bar(episodes, returns, color=["tab:green" if r else "0.6" for r in reached])
        handles = [Patch(color="tab:green", label="goal reached"), Patch(color="0.6", label="no goal")]
        bars_ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
    bars_ax.axhline(0.0, color="0.3", linewidth=0.8)
    bars_ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    bars_ax.set(xlabel="episode", ylabel="return", title=f"Return per deterministic episode (mean {np.mean(returns):.1f})")

    image = heat_ax.imshow(heat, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=1.0,
                           extent=(0, heat.shape[1], num_experts - 0.5, -0.5))
    for end in ends[:-1]:
        heat_ax.axvline(end, color="white", linewidth=1.2)
    starts = np.concatenate([[0], ends[:-1]])
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        acting = weights[i].argmax(1)  # the deterministic agent acts with the gate's most probable expert
        heat_ax.step(np.arange(start, end + 1), np.append(acting, acting[-1]), where="post", color="tab:red",
                     linewidth=1.3)
        if (end - start) / ends[-1] >= MIN_LABELLED_SHARE:
            heat_ax.text((start + end) / 2, -0.5, f"ep {i}", ha="center", va="bottom", fontsize=7, color="0.25")
    heat_ax.set_ylim(num_experts - 0.5, -0.5)
    heat_ax.set_yticks(range(num_experts), [f"expert {k + 1}" for k in range(num_experts)], fontsize=8)
    heat_ax.set_xlabel("step (episodes one after another, separated by white lines)")
    heat_ax.set_title("Gate weights w_k(s) over the steps; red: the expert the agent acts with", fontsize=10, pad=14)
    fig.colorbar(image, ax=heat_ax, label="gate weight", fraction=0.04, pad=0.015)
    fig.suptitle(env_id, fontsize=12)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
