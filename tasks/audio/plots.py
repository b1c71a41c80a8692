"""Drawings of the audio task: the log-mel spectrogram of a generated clip, as ``zoo predict audio --plot`` writes
it, in the codec's own analysis (:class:`~.codec.MelSpec`: 80 mel bins, 50 frames per second), so the picture
shows what the model's tokens stand for; and the board figure, ``python -m zoo.tasks.audio.plots [BOARD] [--tier
full]`` → ``leaderboards/<BOARD>.nll.png``: every row's held-out speech and music NLL, and the MoE rows' NLL against
the routed experts a token uses; with ``--examples WEIGHTS``, ``<BOARD>.examples.png``: a new sentence as espeak-ng
says it, through the codec and as the weights speak it, and a new caption played."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .codec import HOP, N_MELS, SAMPLE_RATE, MelSpec

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def mel_figure(wave: np.ndarray, title: str) -> Figure:
    """A clip's log-mel spectrogram against time in seconds and mel bin, with a colour bar.

    Args:
        wave: ``[T]`` float samples at 16 kHz.
        title: the figure title.
    """
    from matplotlib.figure import Figure

    logmel = MelSpec()(np.asarray(wave, dtype=np.float32)).numpy()
    seconds = len(logmel) * HOP / SAMPLE_RATE
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(logmel.T, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                      extent=(0.0, seconds, 0.0, N_MELS))
    fig.colorbar(image, ax=ax, label="log magnitude")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    ax.set_title(title, fontsize=9)
    return fig


DEFAULT_BOARD = "audio.speech-music"
#: The seeded sentence and caption stream of the examples figure (the corpus draws from the data seed's).
EXAMPLE_STREAM = 20_261_205
#: The board figure's axes: result key → axis label.
AXES = {"test/speech_nll": "speech NLL (nats/token, held out)", "test/music_nll": "music NLL (nats/token, held out)",
        "test/active_experts": "routed experts per token"}


def row_stats(board: str, tier: str) -> dict[str, dict[str, tuple[float, float]]]:
    """Per row with results, ``(mean, std)`` over seeds of every key of :data:`AXES` (NaN where no seed has it)."""
    import math

    from zoo import leaderboard
    from zoo.errors import ZooValueError

    results = leaderboard.load_results(board, tier)
    if not results:
        raise ZooValueError(f"{board} has no {tier} results: run `zoo leaderboard reproduce {board} --tier {tier}`")
    stats: dict[str, dict[str, tuple[float, float]]] = {}
    for row in leaderboard.load_spec(board).rows:
        runs = results.get(row.name, [])
        if not runs:
            continue
        stats[row.name] = {}
        for key in AXES:
            values = [r["metrics"][key] for r in runs if math.isfinite(r["metrics"].get(key, math.nan))]
            stats[row.name][key] = (float(np.mean(values)), float(np.std(values))) if values else (math.nan, math.nan)
    return stats


def board_figure(board: str, stats: dict[str, dict[str, tuple[float, float]]]) -> Figure:
    """Left: each row's speech NLL against its music NLL (a specialist is a line: it has one task); right: the MoE
    rows' NLL against the routed experts a token uses. Points are means over seeds, bars their std."""
    import math

    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.6), layout="constrained")
    joint, routed = fig.subplots(1, 2)
    colours = {row: colormaps["tab10"](i % 10) for i, row in enumerate(stats)}
    for row, values in stats.items():
        (sx, sxe), (my, mye) = values["test/speech_nll"], values["test/music_nll"]
        colour = colours[row]
        if math.isfinite(sx) and math.isfinite(my):
            marker = "*" if row.startswith("unimoe") else "o"
            joint.errorbar(sx, my, xerr=sxe, yerr=mye, fmt=marker, color=colour, capsize=2,
                           markersize=10 if marker == "*" else 6)
            joint.annotate(row, (sx, my), textcoords="offset points", xytext=(4, 3), fontsize=7)
        elif math.isfinite(sx):
            joint.axvline(sx, color=colour, linestyle="--", linewidth=1, label=f"{row} (speech only)")
        elif math.isfinite(my):
            joint.axhline(my, color=colour, linestyle="--", linewidth=1, label=f"{row} (music only)")
        active, _ = values["test/active_experts"]
        if math.isfinite(active):
            for key, marker in (("test/speech_nll", "o"), ("test/music_nll", "s")):
                y, err = values[key]
                routed.errorbar(active, y, yerr=err, fmt=marker, color=colour, capsize=2)
            routed.annotate(row, (active, values["test/speech_nll"][0]), textcoords="offset points", xytext=(4, 3),
                            fontsize=7)
    joint.set(xlabel=AXES["test/speech_nll"], ylabel=AXES["test/music_nll"],
              title="speech vs music (lower left is better; dashed: specialists)")
    joint.legend(fontsize=7, loc="upper left")
    routed.set(xlabel=AXES["test/active_experts"], ylabel="NLL (nats/token)",
               title="MoE rows: NLL vs experts used (● speech, ■ music)")
    for ax in (joint, routed):
        ax.grid(alpha=0.3)
        ax.title.set_fontsize(9)
    fig.suptitle(f"{board}: held-out NLL per row (mean ± std over seeds; ★ UniMoE-style rows)", fontsize=9)
    return fig


def examples_figure(loaded: Any, seed: int = 0) -> Figure:
    """Log-mels of a new sentence (a seeded sentence stream the corpus never draws from, a held-out voice) as
    espeak-ng says it, as the codec rebuilds it, and as the weights speak it; and of a new caption played."""
    from matplotlib.figure import Figure

    from . import music, speech
    from .generation import generate

    module = loaded.module
    codec, sampling = module.codec, loaded.config.eval
    sentence = speech.sentences(EXAMPLE_STREAM, 1)[0]
    voice = next(s for s in speech.speakers(loaded.config.data.seed) if s.held_out)
    real = speech.trim_silence(speech.synthesize(sentence, voice.voice, voice.pitch, voice.rate))
    said = generate(module.model, codec, [sentence], "speech", seed=seed, temperature=sampling.temperature,
                    top_k=sampling.top_k, max_frames=sampling.max_frames).waves[0]
    caption = music.caption(music.music_params(EXAMPLE_STREAM, 0))
    played = generate(module.model, codec, [caption], "music", seed=seed, temperature=sampling.temperature,
                      top_k=sampling.top_k, max_frames=sampling.max_frames).waves[0]
    panels = [(f"espeak-ng ({voice.voice}, held out): {sentence!r}", real),
              ("the same through the codec (the best a decoder can do)", codec.waveform(codec.tokens(real), len(real))),
              ("spoken by the weights", said), (f"played by the weights: {caption!r}", played)]
    fig = Figure(figsize=(9.0, 10.0), layout="constrained")
    mel = MelSpec()
    for ax, (title, wave) in zip(fig.subplots(len(panels), 1), panels):
        logmel = mel(np.asarray(wave, dtype=np.float32)).numpy()
        ax.imshow(logmel.T, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                  extent=(0.0, len(logmel) * HOP / SAMPLE_RATE, 0.0, N_MELS))
        ax.set_title(title, fontsize=8)
        ax.set_ylabel("mel bin")
    ax.set_xlabel("time (s)")
    return fig


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from zoo import leaderboard
    from zoo.errors import ZooError
    from zoo.io import write_figure

    p = argparse.ArgumentParser(description="figure of a reproduced audio board")
    p.add_argument("board", nargs="?", default=DEFAULT_BOARD)
    p.add_argument("--tier", default="full", choices=list(leaderboard.TIERS))
    p.add_argument("--examples", metavar="WEIGHTS", help="instead draw <BOARD>.examples.png with these weights")
    args = p.parse_args(argv)
    try:
        if args.examples:
            from zoo import api

            path = write_figure(leaderboard.boards_dir() / f"{args.board}.examples.png",
                                examples_figure(api.load_weights(args.examples)))
        else:
            path = write_figure(leaderboard.boards_dir() / f"{args.board}.nll.png",
                                board_figure(args.board, row_stats(args.board, args.tier)))
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
