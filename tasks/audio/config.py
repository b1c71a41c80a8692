"""Typed config of the audio task: the schema every ``configs/audio/*.yaml`` recipe is validated into. Torch-free, so
a recipe resolves and shows without importing torch or torchaudio."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo.errors import check_arg, check_seed
from zoo.moe.config import MoEConfig
from zoo.optim import OptimConfig

#: The generation tasks, in the order of their task-token ids.
TASKS = ("speech", "music")
FFNS = ("dense", "moe")


def _positive_int(value: Any, name: str) -> None:
    check_arg(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, value, "a positive int")


@dataclass
class DataConfig:
    """The synthetic corpus and what a run trains on.

    ``num_speech``/``num_music``: clips of the seeded corpus (espeak-ng utterances, rendered MIDI; about 10:1 as in
    docs/data.md); its test part is the utterances of 8 held-out speakers and a tenth of the music clips.
    ``tasks``: the tasks a run trains and is scored on (a specialist takes one). ``val_clips``: training clips per
    task kept out for the validation curve. ``seed``: the corpus and codec seed; it stays fixed across a board's
    seeds, which vary initialisation and batch order.
    """

    num_speech: int = 400
    num_music: int = 40
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    val_clips: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        check_arg(len(self.tasks) >= 1 and len(set(self.tasks)) == len(self.tasks), "data.tasks", self.tasks,
                  "one or both of speech, music, without repeats")
        for name in self.tasks:
            check_arg(name in TASKS, "data.tasks", name, TASKS)
        for name in ("num_speech", "num_music"):
            value = getattr(self, name)
            check_arg(isinstance(value, int) and not isinstance(value, bool) and value >= 0, f"data.{name}", value,
                      "an int >= 0")
        check_arg(self.num_speech >= 10 or "speech" not in self.tasks, "data.num_speech", self.num_speech,
                  "at least 10 when data.tasks has speech")
        check_arg(self.num_music >= 10 or "music" not in self.tasks, "data.num_music", self.num_music,
                  "at least 10 when data.tasks has music")
        _positive_int(self.val_clips, "data.val_clips")
        check_seed(self.seed, "data.seed")


@dataclass
class ModelConfig:
    """The token decoder (:class:`~zoo.tasks.audio.models.TokenDecoder`).

    ``ffn``: ``dense`` (a GELU MLP of ``dense_hidden`` per block) or ``moe`` (the ``moe.*`` block of the recipe in
    every block). ``max_len``: the longest ``1 + text + frames`` sequence the position table covers.
    """

    d_model: int = 128
    layers: int = 4
    heads: int = 4
    ffn: str = "moe"
    dense_hidden: int = 512
    max_len: int = 384

    def __post_init__(self) -> None:
        check_arg(self.ffn in FFNS, "model.ffn", self.ffn, FFNS)
        for name in ("d_model", "layers", "heads", "dense_hidden", "max_len"):
            _positive_int(getattr(self, name), f"model.{name}")
        check_arg(self.d_model % self.heads == 0, "model.d_model", self.d_model, f"a multiple of model.heads={self.heads}")


@dataclass
class TrainConfig:
    """Batches, the aux-loss schedule and the three-stage curriculum.

    The MoE routers' balance loss weight falls linearly from ``aux_start`` to ``aux_end`` over the run's steps
    (UniMoE-Audio: 0.025 → 0.001). With ``curriculum`` the fit is stage 3 of UniMoE-Audio's recipe, and stages 1–2
    run when it starts: (1) one dense specialist per task (``dense_hidden = experts_per_task × moe.d_hidden``,
    same initialisation) trained ``specialist_steps`` steps on its task alone (repeating its clips as often as
    needed, so the scarce music gets as many steps as speech) at ``specialist_lr``; (2) each
    specialist's FFNs are cut into ``experts_per_task`` experts (speech's first), the other weights averaged,
    the shared experts start at zero output, and with ``warm_gates`` only the gates and shared experts train for
    ``gate_steps`` steps at ``gate_lr`` on batches with as many clips of each task; (3) everything trains jointly
    at ``optim.lr``. ``spike_steps``: stage-3 steps after which a fixed validation batch's loss is compared with its
    loss before the unfreeze.
    """

    batch_size: int = 16
    aux_start: float = 0.025
    aux_end: float = 0.001
    curriculum: bool = False
    specialist_steps: int = 90
    specialist_lr: float = 1e-3
    experts_per_task: int = 4
    warm_gates: bool = True
    gate_steps: int = 60
    gate_lr: float = 3e-4
    spike_steps: int = 20

    def __post_init__(self) -> None:
        check_arg(isinstance(self.batch_size, int) and self.batch_size >= 2, "train.batch_size", self.batch_size,
                  "an int >= 2")
        for name in ("aux_start", "aux_end"):
            check_arg(getattr(self, name) >= 0, f"train.{name}", getattr(self, name), "a float >= 0")
        for name in ("specialist_steps", "experts_per_task", "gate_steps", "spike_steps"):
            _positive_int(getattr(self, name), f"train.{name}")
        for name in ("specialist_lr", "gate_lr"):
            check_arg(getattr(self, name) > 0, f"train.{name}", getattr(self, name), "a float > 0")


@dataclass
class EvalConfig:
    """What is generated and how it is scored (the probes are trained once per corpus and cached).

    ``speech_clips``: held-out sentences spoken by the model and transcribed by the local CTC recogniser (trained
    ``recognizer_steps``). ``music_clips``: new captions (not in the corpus) the model plays, scored by the local
    music classifier (``classifier_steps``): attribute accuracy against the caption and Fréchet distance to the
    ``probe_music`` clips rendered from their own seeded stream (half train the classifier, half are the FD
    reference). Sampling: ``temperature`` and ``top_k`` per codebook; at most
    ``max_frames`` frames (50 per second).
    """

    speech_clips: int = 16
    music_clips: int = 16
    temperature: float = 0.8
    top_k: int = 16
    max_frames: int = 220
    recognizer_steps: int = 600
    classifier_steps: int = 600
    probe_music: int = 240

    def __post_init__(self) -> None:
        for name in ("speech_clips", "music_clips", "top_k", "max_frames", "recognizer_steps", "classifier_steps",
                     "probe_music"):
            _positive_int(getattr(self, name), f"eval.{name}")
        check_arg(self.music_clips >= 2, "eval.music_clips", self.music_clips, "an int >= 2 (a covariance)")
        check_arg(self.probe_music >= 4, "eval.probe_music", self.probe_music, "an int >= 4")
        check_arg(self.max_frames >= 4, "eval.max_frames", self.max_frames, "an int >= 4 (the delay pattern's span)")
        check_arg(self.temperature > 0, "eval.temperature", self.temperature, "a float > 0")


@dataclass
class AudioConfig:
    """The audio task's recipe. ``moe`` is every MoE block's FFN (plain top-2 of 8 unless the recipe says otherwise;
    ``unimoe_speech-music`` spells out UniMoE-Audio's top-p + null + shared layer)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    moe: MoEConfig = field(default_factory=lambda: MoEConfig(num_experts=8, k=2, d_hidden=128))
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adamw", lr=1e-3))
    trainer: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 4})
    seed: int = 0

    def __post_init__(self) -> None:
        if self.train.curriculum:
            check_arg(self.model.ffn == "moe", "train.curriculum", True, "false unless model.ffn is moe")
            want = self.train.experts_per_task * len(self.data.tasks)
            check_arg(self.moe.num_experts == want, "moe.num_experts", self.moe.num_experts,
                      f"{want} (train.experts_per_task × the tasks) with train.curriculum")
