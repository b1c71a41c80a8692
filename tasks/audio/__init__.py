"""Audio generation (UniMoE-Audio, Liu et al. 2025): one decoder-only transformer over codec tokens speaks text and
plays captions, its FFNs dense or ``zoo.moe`` layers (top-p routing with null and shared experts), trained jointly
or through UniMoE-Audio's three-stage curriculum; against dense specialists, dense joint models and top-2 routing.

Data: espeak-ng speech (:mod:`.speech`) and rendered MIDI music (:mod:`.music`) in a cached corpus
(:mod:`.corpus`), a user's manifests and speech datasets (:mod:`.formats`), a local log-mel + residual k-means
codec (:mod:`.codec`) and the decoder sequences (:mod:`.data`). Models: the token decoder (:mod:`.models`),
training and the curriculum (:mod:`.module`, :mod:`.curriculum`); local proxy metrics from a CTC recogniser and a
music classifier (:mod:`.probes`, :mod:`.metrics`, :mod:`.evaluation`). Registered as the ``audio`` task through
the ``zoo.tasks`` entry point; builders import torch and torchaudio only when called.
"""

from __future__ import annotations

from zoo.task import PredictOption, TaskSpec, lazy

from .config import AudioConfig

TASK = TaskSpec(
    name="audio",
    description="speech and music generation over codec tokens (UniMoE-Audio): a decoder with top-p + null + "
    "shared MoE FFNs and a three-stage curriculum, against dense specialists, dense joint models and top-2 routing, "
    "on espeak-ng speech and rendered MIDI",
    config_cls=AudioConfig,
    build_datamodule=lazy("zoo.tasks.audio.data:build_datamodule"),
    build_module=lazy("zoo.tasks.audio.module:build_module"),
    model_info=lazy("zoo.tasks.audio.data:model_info"),
    evaluate=lazy("zoo.tasks.audio.evaluation:evaluate"),
    predict=lazy("zoo.tasks.audio.predict:predict"),
    predict_input=None,
    predict_input_required=False,
    predict_options=(
        PredictOption("text", "a sentence to speak (English, printable ASCII)", metavar="TEXT"),
        PredictOption("caption", "a music caption to play, e.g. 'a slow cheerful piano melody in C major, middle "
                      "register, sparse'",
                      metavar="TEXT"),
        PredictOption("midi", "a MIDI file: its caption is read from the notes and played", metavar="MIDI"),
        PredictOption("seed", "sampling seed (default 0)", type=int, metavar="N"),
        PredictOption("plot", "draw the generated audio's mel spectrogram into this PNG", metavar="PNG"),
    ),
    predict_out="the WAV file to write (16 kHz mono)",
    extras=("audio",),
    requires=("torchaudio", "espeakng_loader", "pretty_midi", "midirenderer", "soundfile"),
    headline_metrics=("test/speech_nll", "test/music_nll", "test/cer", "test/music_fd", "test/attr_acc",
                      "test/active_experts", "test/null_rate", "test/unfreeze_spike"),
)
