"""DETR-lite detectors of the detection task: a timm CNN trained from scratch, a dense transformer encoder and a
decoder whose FFNs in ``model.moe_layers`` are ``zoo.moe`` MoE layers, with class and box heads on every decoder
layer (for the auxiliary per-layer set loss).

The decoder rows differ only in those FFNs: ``dense`` (one FFN of ``ffn_hidden``), ``moe`` with a learned top-k
router (Switch jitter N(0, 1/E²), capacity ``capacity_factor`` in training; DAMEX's decoder; dropless in eval, so an
image's boxes do not depend on the other images of its batch) or the dataset's expert given
(``routing=oracle``, a :class:`zoo.moe.DomainRouter`), and ``split`` (Dynamic-DINO-style: the FFN's hidden units
cut into groups that run together as the dense FFN until :meth:`DetrLite.sparsify`, then top-k of them under a
learned router). Every decoder FFN is bias-free with the parameter shapes of one ``FFNExperts`` expert, so the
dense twin's parameters equal a top-1 MoE's active ones less its routers. ``per_dataset`` wraps one detector per
dataset (:class:`PerDatasetDetector`). :func:`postprocess` turns outputs into scored boxes for COCO AP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from zoo.errors import ZooValueError, check_arg
from zoo.kernels.activations import apply_activation
from zoo.moe import DomainRouter, ExpertStats, FFNExperts, MoELayer, MoEOutput, Router, Routing, TopKRouter, collect

from .config import ModelConfig

#: Feature-map stride the encoder reads: 8×8 tokens for a 64-pixel input.
STRIDE = 8
#: Narrower stages for backbones that take them (timm ResNets): the stride-8 stage at 64 pixels needs few channels.
BACKBONE_KWARGS: dict[str, dict] = {"resnet10t": {"stem_width": 16, "channels": (32, 64, 128, 256)}}
#: Logit given to classes outside an image's dataset (finite, so losses and softmax stay finite in fp16).
MASKED_LOGIT = -1e4


@dataclass
class DetOutput:
    """What a detector returns for ``B`` images, ``L`` decoder layers and ``Q`` queries.

    Args:
        logits: ``[L, B, Q, C + 1]`` class logits per decoder layer, the last column "no object".
        boxes: ``[L, B, Q, 4]`` boxes as ``cx, cy, w, h`` in [0, 1] of the (square, padded) input.
        aux: the MoE layers' already weighted auxiliary losses, ``layer/name`` (:func:`zoo.moe.collect`).
        stats: routing statistics per MoE layer.
        router_logits: per MoE layer the fp32 router logits ``[B, Q, E]``.
        chosen: per MoE layer each query's top-1 expert ``[B, Q]`` before any capacity drop.
    """

    logits: torch.Tensor
    boxes: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, ExpertStats] = field(default_factory=dict)
    router_logits: dict[str, torch.Tensor] = field(default_factory=dict)
    chosen: dict[str, torch.Tensor] = field(default_factory=dict)


class DenseFFN(nn.Module):
    """A bias-free two-layer GELU FFN held as a one-expert ``FFNExperts`` bank (same shapes and init as an
    expert, so ``zoo.moe.count_params`` and the dense-vs-MoE parameter comparison see the same thing)."""

    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.experts = FFNExperts(1, d_model, d_hidden, "gelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_activation(x @ self.experts.w1[0], "gelu") @ self.experts.w2[0]


def split_dense_ffn(w1_DF: torch.Tensor, w2_FD: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a dense FFN's hidden units into ``groups`` consecutive slices: ``w1[G, D, F/G]``, ``w2[G, F/G, D]``.

    ``Σ_g gelu(x w1_g) w2_g = gelu(x w1) w2``: the activation is element-wise, so the parts sum to the dense FFN.
    """
    D, F_ = w1_DF.shape
    check_arg(F_ % groups == 0, "groups", groups, f"a divisor of the hidden width {F_}")
    return w1_DF.reshape(D, groups, F_ // groups).permute(1, 0, 2).contiguous(), w2_FD.reshape(groups, F_ // groups, D)


class SplitRouter(Router):
    """Router of a split FFN (Dynamic-DINO-style): dense first, then learned top-k over the ``G`` parts.

    Dense phase: every part runs with weight 1, so the layer is exactly the dense FFN the parts were cut from.
    After :meth:`sparsify`: the top-``k`` parts of ``p = softmax(x W)`` run with weight ``(G / k) · G · p_e``.
    The gate starts at zero, so routing starts uniform (``p_e = 1/G``): then ``G · p_e = 1`` and each chosen part
    is scaled by ``G / k``, which makes the output an unbiased estimate of the dense sum over all G parts when the
    k are a uniform random choice (each part is chosen with probability k/G). Weights keep the raw probabilities
    (not renormalised over the k), so the gate learns from the task loss for every k, k = 1 included.
    The phase is a persistent buffer: it travels with checkpoints.
    """

    def __init__(self, d_model: int, groups: int, k: int) -> None:
        super().__init__(d_model, groups, balance_coef=0.0)
        check_arg(isinstance(k, int) and 1 <= k <= groups, "k", k, f"an int in [1, {groups}]")
        nn.init.zeros_(self.gate.weight)
        self.top_k = k
        self.register_buffer("sparse", torch.zeros((), dtype=torch.bool))

    @property
    def k(self) -> int:
        """Parts a token runs now: all of them in the dense phase."""
        return self.top_k if bool(self.sparse) else self.num_experts

    def sparsify(self) -> None:
        """Switch to top-k routing (idempotent)."""
        self.sparse.fill_(True)

    def select(self, logits_TE: torch.Tensor, x_TD: torch.Tensor, token_ids_T: torch.Tensor | None) -> Routing:
        T, G = logits_TE.shape
        if not bool(self.sparse):
            ids = torch.arange(G, device=logits_TE.device).expand(T, G)
            return Routing(ids, torch.ones(T, G, device=logits_TE.device), logits_TE)
        probs, ids = torch.softmax(logits_TE, dim=-1).topk(self.top_k, dim=-1)
        return Routing(ids, probs * (G * G / self.top_k), logits_TE)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.top_k}, sparse={bool(self.sparse)}"


def build_ffn(cfg: ModelConfig, num_experts: int, moe: bool) -> nn.Module:
    """The FFN of one decoder layer: dense, or the MoE layer of ``cfg.decoder`` when ``moe``."""
    d, hidden = cfg.d_model, cfg.ffn_hidden
    if not moe or cfg.decoder == "dense":
        return DenseFFN(d, hidden)
    if cfg.decoder == "split":
        groups = cfg.split_groups
        dense = DenseFFN(d, hidden).experts
        experts = FFNExperts(groups, d, hidden // groups, "gelu")
        w1, w2 = split_dense_ffn(dense.w1[0].detach(), dense.w2[0].detach(), groups)
        with torch.no_grad():
            experts.w1.copy_(w1)
            experts.w2.copy_(w2)
        return MoELayer(SplitRouter(d, groups, cfg.split_k), experts)
    experts = FFNExperts(num_experts, d, hidden, "gelu")
    if cfg.routing == "oracle":
        return MoELayer(DomainRouter(d, num_experts), experts)
    router = TopKRouter(d, num_experts, cfg.k, capacity_factor=cfg.capacity_factor, noise_std=1.0 / num_experts,
                        eval_dropless=True, balance_coef=0.0)
    return MoELayer(router, experts)


def sine_positions(h: int, w: int, d_model: int, device: torch.device, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's 2-D sine encoding of an ``h × w`` grid, ``[h·w, d_model]``: half the channels encode the row, half
    the column, each as sin/cos pairs of the cell centre (scaled to [0, 2π]) at geometric frequencies."""
    check_arg(d_model % 4 == 0, "model.d_model", d_model, "a multiple of 4 (sine positions)")
    half = d_model // 2
    freq = temperature ** (2 * (torch.arange(half, device=device) // 2) / half)
    ys = (torch.arange(h, device=device) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, device=device) + 0.5) / w * 2 * math.pi

    def encode(v: torch.Tensor) -> torch.Tensor:
        angles = v[:, None] / freq
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=-1).flatten(1)

    pos_y, pos_x = encode(ys), encode(xs)
    return torch.cat((pos_y[:, None].expand(h, w, half), pos_x[None].expand(h, w, half)), dim=-1).reshape(h * w, -1)


class DecoderLayer(nn.Module):
    """Pre-norm DETR decoder layer: self-attention over the queries, cross-attention to the encoder memory and
    an FFN (dense or MoE), each a residual branch; query positions are added to queries and keys."""

    def __init__(self, d_model: int, heads: int, ffn: nn.Module, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.ffn = ffn
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                token_ids: torch.Tensor | None) -> tuple[torch.Tensor, MoEOutput | None]:
        h = self.norm1(tgt)
        q = h + query_pos
        tgt = tgt + self.dropout(self.self_attn(q, q, h, need_weights=False)[0])
        h = self.norm2(tgt)
        tgt = tgt + self.dropout(self.cross_attn(h + query_pos, memory + memory_pos, memory, need_weights=False)[0])
        h = self.norm3(tgt)
        if isinstance(self.ffn, MoELayer):
            moe = self.ffn(h, token_ids)
            return tgt + self.dropout(moe.y), moe
        return tgt + self.dropout(self.ffn(h)), None


def build_backbone(name: str) -> nn.Module:
    """A timm feature extractor (random init) returning only its stride-8 map."""
    import timm

    try:
        probe = timm.create_model(name, pretrained=False, features_only=True)
    except RuntimeError as err:
        raise ZooValueError(f"model.backbone={name!r}: timm cannot build it as a feature extractor ({err})") from None
    reductions = probe.feature_info.reduction()
    check_arg(STRIDE in reductions, "model.backbone", name, f"a timm model with a stride-{STRIDE} feature map")
    return timm.create_model(name, pretrained=False, features_only=True, out_indices=(reductions.index(STRIDE),),
                             **BACKBONE_KWARGS.get(name, {}))


class DetrLite(nn.Module):
    """A small DETR (module docstring) for ``num_classes`` classes.

    The stride-8 backbone map is projected to ``d_model`` by a 1×1 conv; its 2-D sine positions are added once to
    the encoder input (``nn.TransformerEncoderLayer`` takes none per layer) and again to the cross-attention keys.
    Queries start at zero with learned query positions; every decoder layer's output goes through one shared
    LayerNorm and the class and box heads.

    Args:
        cfg: the model config.
        num_classes: C, the unified classes (logits have C + 1 columns, the last "no object").
        num_experts: E of the ``moe`` decoder (the split decoder has ``cfg.split_groups`` parts instead).
        image_size: the square input size in pixels (a multiple of 8).
    """

    def __init__(self, cfg: ModelConfig, num_classes: int, num_experts: int, image_size: int) -> None:
        super().__init__()
        check_arg(isinstance(num_classes, int) and num_classes >= 1, "num_classes", num_classes, "a positive int")
        check_arg(isinstance(num_experts, int) and num_experts >= 1, "num_experts", num_experts, "a positive int")
        check_arg(image_size % STRIDE == 0, "image_size", image_size, f"a multiple of {STRIDE}")
        check_arg(cfg.decoder != "moe" or cfg.k <= num_experts, "model.k", cfg.k,
                  f"an int in [1, {num_experts}] (the experts)")
        d = cfg.d_model
        self.cfg, self.num_classes, self.image_size = cfg, num_classes, image_size
        self.backbone = build_backbone(cfg.backbone)
        self.input_proj = nn.Conv2d(self.backbone.feature_info.channels()[-1], d, kernel_size=1)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, cfg.ffn_hidden, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.encoder_layers, norm=nn.LayerNorm(d),
                                             enable_nested_tensor=False)
        self.query_pos = nn.Embedding(cfg.queries, d)
        self.layers = nn.ModuleList(
            DecoderLayer(d, cfg.heads, build_ffn(cfg, num_experts, i in cfg.moe_layers), cfg.dropout)
            for i in range(cfg.decoder_layers))
        self.norm = nn.LayerNorm(d)
        self.class_head = nn.Linear(d, num_classes + 1)
        self.box_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4))

    def sparsify(self) -> None:
        """End the dense phase of every split FFN (the ``split`` decoder's switch to top-k routing)."""
        for m in self.modules():
            if isinstance(m, SplitRouter):
                m.sparsify()

    def forward(self, images: torch.Tensor, expert_of_image: torch.Tensor | None = None,
                class_mask: torch.Tensor | None = None) -> DetOutput:
        """Detect in normalised ``images [B, 3, H, W]``.

        Args:
            images: the batch.
            expert_of_image: ``[B]`` expert id of each image's dataset; needed by oracle routing only.
            class_mask: ``[B, C]`` True for the classes an image may contain; the others get a large negative
                logit (the no-object logit is kept).
        """
        B = images.shape[0]
        src = self.input_proj(self.backbone(images)[-1])
        _, d, h, w = src.shape
        pos = sine_positions(h, w, d, src.device).to(src.dtype)
        memory = self.encoder(src.flatten(2).transpose(1, 2) + pos)
        query_pos = self.query_pos.weight[None].expand(B, -1, -1)
        tgt = torch.zeros_like(query_pos)
        token_ids = None
        if self.cfg.decoder == "moe" and self.cfg.routing == "oracle":
            if expert_of_image is None:
                raise ZooValueError("model.routing=oracle needs each image's expert id (expert_of_image)")
            token_ids = expert_of_image[:, None].expand(B, self.cfg.queries)
        hidden, moe_outputs = [], {}
        for i, layer in enumerate(self.layers):
            tgt, moe = layer(tgt, query_pos, memory, pos, token_ids)
            if moe is not None:
                moe_outputs[f"decoder{i}"] = moe
            hidden.append(self.norm(tgt))
        hs = torch.stack(hidden)
        logits = self.class_head(hs)
        if class_mask is not None:
            check_arg(tuple(class_mask.shape) == (B, self.num_classes), "class_mask.shape", tuple(class_mask.shape),
                      f"[{B}, {self.num_classes}]")
            keep = torch.cat((class_mask, class_mask.new_ones(B, 1)), dim=1)
            logits = logits.masked_fill(~keep[None, :, None, :], MASKED_LOGIT)
        aux, stats = collect(moe_outputs)
        router_logits = {name: m.routing.logits.reshape(B, self.cfg.queries, -1) for name, m in moe_outputs.items()}
        chosen = {}
        for name, m in moe_outputs.items():
            requested = m.routing.requested_ids if m.routing.requested_ids is not None else m.routing.ids
            chosen[name] = requested[:, 0].reshape(B, self.cfg.queries)
        return DetOutput(logits, self.box_head(hs).sigmoid(), aux, stats, router_logits, chosen)


class PerDatasetDetector(nn.Module):
    """One :class:`DetrLite` per dataset; each image goes through its own dataset's detector only.

    Args:
        detectors: the per-dataset detectors, in mix order.
    """

    def __init__(self, detectors: list[DetrLite]) -> None:
        super().__init__()
        self.detectors = nn.ModuleList(detectors)

    def sparsify(self) -> None:
        for detector in self.detectors:
            detector.sparsify()

    def forward(self, images: torch.Tensor, dataset_of_image: torch.Tensor | None = None,
                class_mask: torch.Tensor | None = None) -> DetOutput:
        """Args as :meth:`DetrLite.forward`, with ``dataset_of_image [B]`` (the dataset index) required; an MoE
        detector's losses and statistics are keyed ``dataset{k}/...``."""
        if dataset_of_image is None:
            raise ZooValueError("model.per_dataset=true needs each image's dataset (dataset_of_image)")
        n = len(self.detectors)
        lo, hi = int(dataset_of_image.min()), int(dataset_of_image.max())
        check_arg(lo >= 0 and hi < n, "dataset_of_image", f"values in [{lo}, {hi}]", f"dataset indices in [0, {n})")
        parts = []
        for k in dataset_of_image.unique().tolist():
            idx = (dataset_of_image == k).nonzero().squeeze(1)
            mask = class_mask[idx] if class_mask is not None else None
            parts.append((k, idx, self.detectors[k](images[idx], None, mask)))
        first = parts[0][2]
        B = images.shape[0]
        logits = first.logits.new_empty(first.logits.shape[0], B, *first.logits.shape[2:])
        boxes = first.boxes.new_empty(first.boxes.shape[0], B, *first.boxes.shape[2:])
        out = DetOutput(logits, boxes)
        for k, idx, part in parts:
            logits[:, idx], boxes[:, idx] = part.logits, part.boxes
            out.aux.update({f"dataset{k}/{name}": v for name, v in part.aux.items()})
            out.stats.update({f"dataset{k}/{name}": v for name, v in part.stats.items()})
            for name, v in part.router_logits.items():
                out.router_logits.setdefault(name, v.new_zeros(B, *v.shape[1:]))[idx] = v
            for name, v in part.chosen.items():
                out.chosen.setdefault(name, v.new_zeros(B, *v.shape[1:]))[idx] = v
        return out


def build_detector(cfg: ModelConfig, num_classes: int, num_experts: int, image_size: int,
                   num_datasets: int = 1) -> nn.Module:
    """The detector of ``cfg``: a :class:`DetrLite`, or with ``cfg.per_dataset`` a :class:`PerDatasetDetector` of
    ``num_datasets`` of them.

    Args:
        cfg: the model config.
        num_classes: the unified classes of the mix.
        num_experts: experts of the ``moe`` decoder.
        image_size: square input size in pixels.
        num_datasets: datasets of the mix (detectors of ``per_dataset``).
    """
    if cfg.per_dataset:
        check_arg(isinstance(num_datasets, int) and num_datasets >= 1, "num_datasets", num_datasets, "a positive int")
        return PerDatasetDetector([DetrLite(cfg, num_classes, num_experts, image_size) for _ in range(num_datasets)])
    return DetrLite(cfg, num_classes, num_experts, image_size)


@torch.no_grad()
def postprocess(out: DetOutput, image_sizes: torch.Tensor, top: int = 100) -> list[dict[str, torch.Tensor]]:
    """Scored boxes per image from the last decoder layer.

    Class probabilities are the softmax over the C + 1 columns without the no-object one; each image keeps its
    ``top`` best (query, class) pairs over all Q × C of them (Deformable DETR's top-k), so a query may give
    several candidates, which COCO AP rewards when the best class is unsure.

    Args:
        out: the detector output.
        image_sizes: ``[B, 2]`` (height, width) in pixels of the padded input the boxes are scaled to.
        top: detections kept per image (at most Q·C).

    Returns:
        Per image ``boxes [N, 4]`` xyxy pixels (float), ``scores [N]`` and ``labels [N]`` (int64), best first.
    """
    from torchvision.ops import box_convert

    probs = out.logits[-1].float().softmax(-1)[..., :-1]
    B, Q, C = probs.shape
    scores, flat = probs.reshape(B, Q * C).topk(min(top, Q * C), dim=-1)
    queries, labels = flat // C, flat % C
    boxes = box_convert(out.boxes[-1].float(), "cxcywh", "xyxy")
    h, w = image_sizes.to(boxes).unbind(-1)
    scale = torch.stack((w, h, w, h), dim=-1)[:, None]
    boxes = boxes.gather(1, queries[..., None].expand(-1, -1, 4)) * scale
    return [{"boxes": boxes[b], "scores": scores[b], "labels": labels[b]} for b in range(B)]
