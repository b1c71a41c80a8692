"""Typed config of the detection task: the schema every ``configs/detection/*.yaml`` recipe is validated into.
Torch-free, so a recipe resolves and shows without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo.errors import check_arg, check_seed
from zoo.optim import OptimConfig

DECODERS = ("dense", "moe", "split")
ROUTINGS = ("learned", "oracle")
ROUTING_LOSSES = ("damex", "vanilla", "none")
CLASS_LOSSES = ("focal", "softmax")
STRIDES = (4, 8)
REAL_SETS = ("deepforest", "stardist")
SAMPLINGS = ("size", "equal")


@dataclass
class DataConfig:
    """The datasets of the mix and how training images are drawn and augmented.

    ``miniuodb``: the names of the Mini-UODB domains in the mix (:mod:`.miniuodb`), generated with ``seed`` at
    ``scale`` (1.0: 3,000/2,000/200/1,500/400/800 training and 200 test images per domain). ``real``: the
    packaged real sets cut into tiles (``deepforest`` tree crowns, ``stardist`` nuclei; :mod:`.tiles`).
    ``coco``: a user's own datasets, each ``{name, annotations, images, test_annotations, test_images}`` in
    COCO JSON. ``experts``: dataset name → expert id (one expert per dataset by default). ``weights``: dataset
    name → sampling share; without them ``sampling`` decides: ``size`` (each dataset's share is its size, so every
    training image is drawn once per epoch) or ``equal`` (every dataset equally often, small ones repeated).
    ``image_size``: every image is letterboxed to this many pixels (longer side) before the network.
    ``augment``: torchvision v2 photometric and geometric training augmentation (:mod:`.transforms`).
    ``seed`` is the data seed; it stays fixed across a board's seeds, which vary initialisation and batch order.
    """

    miniuodb: list[str] = field(default_factory=lambda: ["digits", "shapes", "comic", "faces", "signs", "rects"])
    real: list[str] = field(default_factory=lambda: list(REAL_SETS))
    coco: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    scale: float = 1.0
    experts: dict[str, int] | None = None
    weights: dict[str, float] | None = None
    sampling: str = "size"
    image_size: int = 64
    augment: bool = True
    batch_size: int = 32

    def __post_init__(self) -> None:
        from .miniuodb import DOMAINS

        names = [d.name for d in DOMAINS]
        for name in self.miniuodb:
            check_arg(name in names, "data.miniuodb", name, names)
        for name in self.real:
            check_arg(name in REAL_SETS, "data.real", name, REAL_SETS)
        for i, spec in enumerate(self.coco):
            check_arg(isinstance(spec, dict) and {"name", "annotations", "images", "test_annotations"} <= set(spec),
                      f"data.coco[{i}]", spec, "a mapping with name, annotations, images and test_annotations (and "
                      "test_images when the test images are in another folder)")
        check_arg(bool(self.miniuodb or self.real or self.coco), "data", "no datasets",
                  "at least one of data.miniuodb, data.real, data.coco")
        check_arg(self.sampling in SAMPLINGS, "data.sampling", self.sampling, SAMPLINGS)
        check_seed(self.seed, "data.seed")
        check_arg(isinstance(self.scale, int | float) and self.scale > 0, "data.scale", self.scale, "a number > 0")
        check_arg(isinstance(self.image_size, int) and 32 <= self.image_size <= 1024 and self.image_size % 8 == 0,
                  "data.image_size", self.image_size, "a multiple of 8 in [32, 1024]")
        check_arg(isinstance(self.batch_size, int) and self.batch_size >= 1, "data.batch_size", self.batch_size,
                  "a positive int")


@dataclass
class ModelConfig:
    """A DETR-style detector: a timm CNN backbone trained from scratch, a dense transformer encoder and a decoder
    whose FFNs in ``moe_layers`` (0-based decoder layer indices) are MoE layers.

    ``decoder``: ``dense`` (every FFN dense, hidden ``ffn_hidden``), ``moe`` (``num_experts`` experts of hidden
    ``ffn_hidden`` each, top-``k`` router with capacity ``capacity_factor`` and training noise N(0, 1/E²)) or
    ``split`` (Dynamic-DINO-style: the MoE FFNs train as one dense FFN for ``split_epochs`` epochs, then their
    hidden units are split into ``split_groups`` experts run top-``split_k``). ``num_experts`` None: one per
    expert id of the data's mix. ``routing``: ``learned`` (the router decides; no dataset label at test time) or
    ``oracle`` (each image's tokens go to its dataset's expert; an analysis row). ``routing_loss``: ``damex`` (CE
    of every decoder token's router logits to its dataset's expert), ``vanilla`` (importance + load CV² on the
    matched tokens) or ``none``, weighted by ``routing_loss_weight``. ``dataset_heads``: class scores are
    restricted to the image's own dataset's labels (needs the dataset at test time). ``per_dataset``: one
    separate detector per dataset, each trained only on its images (the one-model-per-dataset baseline).
    ``stride``: the backbone feature map the encoder reads (8: 8×8 tokens at 64 px; 4: 16×16, for small objects).
    ``two_stage``: the decoder's reference boxes are the top-``queries`` proposals of the encoder (a class and a
    box per memory token, trained with the same set loss; Deformable DETR's two-stage, DINO's mixed query
    selection) instead of learned ones. ``box_attention``: the decoder's cross-attention gets an SMCA-style
    Gaussian prior around each query's reference box (learned per-head widths). ``class_loss``: ``focal`` (sigmoid
    focal loss, α 0.25, γ 2, and the focal matching cost; Deformable DETR, DINO) or ``softmax`` (DETR's
    cross-entropy with a "no object" class weighted ``no_object_weight``). The class term is weighted
    ``cost_class`` in matching; in the loss the focal term is weighted ``cost_class`` too (Deformable DETR),
    softmax CE 1 (DETR); L1 and GIoU ``cost_l1`` and ``cost_giou`` in both.
    """

    backbone: str = "resnet10t"
    stride: int = 8
    d_model: int = 64
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 3
    queries: int = 20
    ffn_hidden: int = 128
    dropout: float = 0.0
    moe_layers: list[int] = field(default_factory=lambda: [0, 2])
    decoder: str = "moe"
    num_experts: int | None = None
    k: int = 1
    capacity_factor: float = 1.25
    routing: str = "learned"
    routing_loss: str = "damex"
    routing_loss_weight: float = 0.1
    split_groups: int = 4
    split_k: int = 2
    split_epochs: int = 5
    dataset_heads: bool = False
    per_dataset: bool = False
    two_stage: bool = True
    box_attention: bool = True
    class_loss: str = "focal"
    no_object_weight: float = 0.1
    cost_class: float = 2.0
    cost_l1: float = 5.0
    cost_giou: float = 2.0

    def __post_init__(self) -> None:
        check_arg(self.decoder in DECODERS, "model.decoder", self.decoder, DECODERS)
        check_arg(self.routing in ROUTINGS, "model.routing", self.routing, ROUTINGS)
        check_arg(self.class_loss in CLASS_LOSSES, "model.class_loss", self.class_loss, CLASS_LOSSES)
        check_arg(isinstance(self.two_stage, bool), "model.two_stage", self.two_stage, "true or false")
        check_arg(isinstance(self.box_attention, bool), "model.box_attention", self.box_attention, "true or false")
        check_arg(self.stride in STRIDES, "model.stride", self.stride, STRIDES)
        check_arg(self.routing_loss in ROUTING_LOSSES, "model.routing_loss", self.routing_loss, ROUTING_LOSSES)
        for name in ("d_model", "heads", "encoder_layers", "decoder_layers", "queries", "ffn_hidden", "k",
                     "split_groups", "split_k"):
            value = getattr(self, name)
            check_arg(isinstance(value, int) and value >= 1, f"model.{name}", value, "a positive int")
        check_arg(self.d_model % self.heads == 0, "model.heads", self.heads,
                  f"a divisor of model.d_model={self.d_model}")
        check_arg(self.d_model % 4 == 0, "model.d_model", self.d_model, "a multiple of 4 (2-D sine positions)")
        check_arg(all(isinstance(i, int) and 0 <= i < self.decoder_layers for i in self.moe_layers),
                  "model.moe_layers", self.moe_layers, f"decoder layer indices in [0, {self.decoder_layers})")
        check_arg(self.num_experts is None or (isinstance(self.num_experts, int) and self.num_experts >= 1),
                  "model.num_experts", self.num_experts, "None or a positive int")
        check_arg(self.capacity_factor > 0, "model.capacity_factor", self.capacity_factor, "a float > 0")
        if self.decoder == "split":
            check_arg(self.split_k <= self.split_groups and self.ffn_hidden % self.split_groups == 0,
                      "model.split_groups", self.split_groups,
                      f"a divisor of model.ffn_hidden={self.ffn_hidden} and >= model.split_k")
        check_arg(isinstance(self.split_epochs, int) and self.split_epochs >= 0, "model.split_epochs",
                  self.split_epochs, "an int >= 0")
        check_arg(0 <= self.dropout < 1, "model.dropout", self.dropout, "a float in [0, 1)")
        check_arg(not (self.routing == "oracle" and self.decoder != "moe"), "model.routing", self.routing,
                  "learned unless model.decoder=moe")
        check_arg(not (self.routing == "oracle" and self.per_dataset), "model.routing", self.routing,
                  "learned with model.per_dataset=true (each dataset has its own detector already)")
        check_arg(not (self.routing_loss == "damex" and self.decoder != "moe"), "model.routing_loss",
                  self.routing_loss, "vanilla or none unless model.decoder=moe (DAMEX maps datasets to the MoE's "
                  "experts)")
        for name in ("routing_loss_weight", "no_object_weight", "cost_class", "cost_l1", "cost_giou"):
            check_arg(getattr(self, name) >= 0, f"model.{name}", getattr(self, name), "a float >= 0")


@dataclass
class DetectionConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adamw", lr=4e-4, weight_decay=1e-4))
    trainer: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 12, "gradient_clip_val": 0.1})
    seed: int = 0

    def __post_init__(self) -> None:
        check_seed(self.seed)
