"""Typed config of the video_anomaly task: the schema every ``configs/video_anomaly/*.yaml`` recipe is validated
into. Torch-free, so a recipe resolves and shows without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo.errors import check_arg, check_seed
from zoo.optim import OptimConfig

SOURCES = ("synthvad", "features", "clips")
ARCHS = ("sultani", "rtfm", "urdmu", "dense", "experts", "gsmoe")
EXPERT_ARCHS = ("experts", "gsmoe")
EXPERT_SOURCES = ("class", "kmeans")
FUSIONS = ("mean", "gate")


@dataclass
class DataConfig:
    """Where the videos come from and how training batches are drawn.

    ``source``:

    - ``synthvad``: the seeded generator of :mod:`.synthvad`; ``synth`` holds its keyword arguments (``n_train``,
      ``n_test``, ``t_range``, ``dim``, ``crops``);
    - ``features``: a feature release in the RTFM/UR-DMU layout (:mod:`.features`): ``train_list`` and
      ``test_list`` name the list files, ``annotations`` the test split's temporal annotation file;
    - ``clips``: real video clips with seeded inserted anomalies, decoded and embedded by a frozen timm backbone
      (:mod:`.clips`); ``clips`` holds its keyword arguments.

    ``seed`` is the data seed; it stays fixed across a board's seeds, which vary initialisation and batch order.
    ``segments``: training videos are resampled to this many segments (RTFM's 32; UR-DMU uses 200), by averaging
    the snippets that fall in each. ``batch_size``: videos per class side of a step, B normal + B abnormal.
    ``cache_dir``: where extracted clip features are kept (keyed by file hash and backbone); None: the user cache.
    ``standardize``: scale every feature to zero mean and unit variance over the training snippets (the statistics
    travel in the model info, so ``predict`` applies the same scaling); the clips source needs it, since the
    motion half of its features is about 20 times smaller than the appearance half.
    """

    source: str = "synthvad"
    seed: int = 0
    synth: dict[str, Any] = field(default_factory=dict)
    train_list: str | None = None
    test_list: str | None = None
    annotations: str | None = None
    clips: dict[str, Any] = field(default_factory=dict)
    segments: int = 32
    batch_size: int = 16
    cache_dir: str | None = None
    standardize: bool = False

    def __post_init__(self) -> None:
        check_arg(self.source in SOURCES, "data.source", self.source, SOURCES)
        check_seed(self.seed, "data.seed")
        check_arg(isinstance(self.segments, int) and self.segments >= 4, "data.segments", self.segments,
                  "an int >= 4")
        check_arg(isinstance(self.batch_size, int) and self.batch_size >= 1, "data.batch_size", self.batch_size,
                  "a positive int")
        if self.source == "features":
            check_arg(bool(self.train_list) and bool(self.test_list), "data.train_list/test_list",
                      (self.train_list, self.test_list), "two list files for data.source=features")


@dataclass
class ModelConfig:
    """The network and its losses.

    ``arch``: ``sultani`` (MIL ranking, Sultani et al. 2018), ``rtfm`` (top-k MIL on feature magnitudes, RTFM-lite),
    ``urdmu`` (UR-DMU-lite: temporal encoder + normal/abnormal memories), ``dense`` (the single-model twin of the
    experts: one scorer as wide as all experts together), ``experts`` (class experts + a fusion) and ``gsmoe``
    (GS-MoE: UR-DMU-lite backbone, class experts, the cross-attention gate). ``experts``: one expert per anomaly
    class of the training data (``class``) or per k-means cluster of the abnormal training videos (``kmeans``,
    ``num_clusters`` of them). ``fusion``: ``mean`` of the expert scores or the learned ``gate``. ``tgs``: add the
    temporal Gaussian splatting pseudo-label loss after ``mil_only_epochs`` epochs of MIL alone. ``memory_slots``:
    slots of each of UR-DMU-lite's two memories (normal and abnormal), which every row but ``sultani`` and
    ``rtfm`` builds on. ``center``: every network first subtracts each video's mean snippet from its snippets (a
    label-free input op; normal and abnormal videos share scenes).
    """

    arch: str = "gsmoe"
    hidden: int = 64
    expert_hidden: int = 64
    heads: int = 2
    dropout: float = 0.1
    experts: str = "class"
    num_clusters: int = 6
    fusion: str = "gate"
    tgs: bool = True
    tgs_threshold: float = 0.2
    mil_only_epochs: int = 1
    smooth: float = 8e-4
    sparse: float = 8e-3
    memory_slots: int = 16
    center: bool = True

    def __post_init__(self) -> None:
        check_arg(self.arch in ARCHS, "model.arch", self.arch, ARCHS)
        check_arg(self.experts in EXPERT_SOURCES, "model.experts", self.experts, EXPERT_SOURCES)
        check_arg(self.fusion in FUSIONS, "model.fusion", self.fusion, FUSIONS)
        for name in ("hidden", "expert_hidden", "heads", "num_clusters", "memory_slots"):
            value = getattr(self, name)
            check_arg(isinstance(value, int) and value >= 1, f"model.{name}", value, "a positive int")
        check_arg(self.hidden % self.heads == 0, "model.heads", self.heads, f"a divisor of model.hidden={self.hidden}")
        check_arg(0 <= self.dropout < 1, "model.dropout", self.dropout, "a float in [0, 1)")
        check_arg(isinstance(self.mil_only_epochs, int) and self.mil_only_epochs >= 0, "model.mil_only_epochs",
                  self.mil_only_epochs, "an int >= 0")
        check_arg(isinstance(self.center, bool), "model.center", self.center, "true or false")
        for name in ("smooth", "sparse", "tgs_threshold"):
            check_arg(getattr(self, name) >= 0, f"model.{name}", getattr(self, name), "a float >= 0")


@dataclass
class VideoAnomalyConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=1e-3, weight_decay=5e-4))
    trainer: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 10})
    seed: int = 0

    def __post_init__(self) -> None:
        check_seed(self.seed)
