"""DETR-lite detectors of the detection task: a timm CNN trained from scratch, a dense transformer encoder and a
decoder whose FFNs in ``model.moe_layers`` are ``zoo.moe`` MoE layers, with class and box heads on every decoder
layer (for the auxiliary per-layer set loss).

The decoder rows differ only in those FFNs: ``dense`` (one FFN of ``ffn_hidden``), ``moe`` with a learned top-k
router (Switch jitter N(0, 1/E²), capacity ``capacity_factor`` in training; DAMEX's decoder; dropless in eval, so an
image's boxes do not depend on the other images of its batch) or the dataset's expert given
(``routing=oracle``, a :class:`zoo.moe.DomainRouter` under the same capacity), and ``split`` (Dynamic-DINO-style: the FFN's hidden units
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
from zoo.moe import (DomainRouter, ExpertStats, FFNExperts, MoELayer, MoEOutput, SplitRouter, TopKRouter, collect,
                     count_params, split_dense_ffn)

from .config import ModelConfig

#: Narrower stages for backbones that take them (timm ResNets): the stride-8 stage at 64 pixels needs few channels.
BACKBONE_KWARGS: dict[str, dict] = {"resnet10t": {"stem_width": 16, "channels": (32, 64, 128, 256)}}
#: Logit given to classes outside an image's dataset (finite, so losses and softmax stay finite in fp16).
MASKED_LOGIT = -1e4
#: Initial width and height of the reference boxes, a fraction of the image side.
INIT_BOX_SIZE = 0.2
#: Initial probability of every class under the focal loss (RetinaNet's prior π).
PRIOR_PROB = 0.01


@dataclass
class DetOutput:
    """What a detector returns for ``B`` images, ``L`` decoder layers and ``Q`` queries.

    Args:
        logits: ``[L, B, Q, C]`` independent class logits per decoder layer when ``sigmoid`` (the focal loss),
            else ``[L, B, Q, C + 1]`` softmax logits whose last column is "no object".
        boxes: ``[L, B, Q, 4]`` boxes as ``cx, cy, w, h`` in [0, 1] of the (square, padded) input.
        aux: the MoE layers' already weighted auxiliary losses, ``layer/name`` (:func:`zoo.moe.collect`).
        stats: routing statistics per MoE layer.
        router_logits: per MoE layer the fp32 router logits ``[B, Q, E]``.
        chosen: per MoE layer each query's top-1 expert ``[B, Q]`` before any capacity drop.
        sigmoid: class scores are sigmoids of ``logits`` (no no-object column), else their softmax.
        enc_logits: with two-stage queries, the class logits ``[B, HW, C]`` (or ``C + 1``) of the encoder's
            proposals, one per memory token; None otherwise.
        enc_boxes: their boxes ``[B, HW, 4]`` (cxcywh in [0, 1]); None without two-stage queries.
    """

    logits: torch.Tensor
    boxes: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, ExpertStats] = field(default_factory=dict)
    router_logits: dict[str, torch.Tensor] = field(default_factory=dict)
    chosen: dict[str, torch.Tensor] = field(default_factory=dict)
    sigmoid: bool = False
    enc_logits: torch.Tensor | None = None
    enc_boxes: torch.Tensor | None = None


class DenseFFN(nn.Module):
    """A bias-free two-layer GELU FFN held as a one-expert ``FFNExperts`` bank (same shapes and init as an
    expert, so ``zoo.moe.count_params`` and the dense-vs-MoE parameter comparison see the same thing)."""

    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.experts = FFNExperts(1, d_model, d_hidden, "gelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_activation(x @ self.experts.w1[0], "gelu") @ self.experts.w2[0]


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
        return MoELayer(DomainRouter(d, num_experts, capacity_factor=cfg.capacity_factor, eval_dropless=True), experts)
    router = TopKRouter(d, num_experts, cfg.k, capacity_factor=cfg.capacity_factor, noise_std=1.0 / num_experts,
                        eval_dropless=True, balance_coef=0.0)
    return MoELayer(router, experts)


def sine_encode(v: torch.Tensor, dims: int, temperature: float) -> torch.Tensor:
    """``[..., dims]`` sin/cos pairs of the angles ``v / temperature^(2⌊c/2⌋ / dims)`` (DETR's position encoding
    of one coordinate; even channels sine, odd channels cosine)."""
    freq = temperature ** (2 * (torch.arange(dims, device=v.device) // 2) / dims)
    angles = v[..., None] / freq
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_positions(h: int, w: int, d_model: int, device: torch.device, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's 2-D sine encoding of an ``h × w`` grid, ``[h·w, d_model]``: half the channels encode the row, half
    the column, each as sin/cos pairs of the cell centre (scaled to [0, 2π]) at geometric frequencies."""
    check_arg(d_model % 4 == 0, "model.d_model", d_model, "a multiple of 4 (sine positions)")
    half = d_model // 2
    ys = (torch.arange(h, device=device) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, device=device) + 0.5) / w * 2 * math.pi
    pos_y, pos_x = sine_encode(ys, half, temperature), sine_encode(xs, half, temperature)
    return torch.cat((pos_y[:, None].expand(h, w, half), pos_x[None].expand(h, w, half)), dim=-1).reshape(h * w, -1)


def box_sine(boxes: torch.Tensor, d_model: int, temperature: float = 10000.0) -> torch.Tensor:
    """DAB-DETR's encoding of boxes ``[..., 4]`` (cxcywh in [0, 1]): each coordinate scaled to [0, 2π] and sine
    encoded in ``d_model / 2`` channels, ``[..., 2 · d_model]`` in the order cy, cx, w, h (rows first, as
    :func:`sine_positions`, so a box's centre encoding equals the grid encoding at that point)."""
    cx, cy, w, h = (boxes * (2 * math.pi)).unbind(-1)
    return torch.cat([sine_encode(v, d_model // 2, temperature) for v in (cy, cx, w, h)], dim=-1)


class BoxAttentionPrior(nn.Module):
    """SMCA-style spatial prior of the cross-attention (Gao et al. 2021): a log-Gaussian bump around each query's
    reference box, ``−½ [((x − cx) / σx)² + ((y − cy) / σy)²]`` over the memory cells' centres, with
    ``σ = s_head · (w, h) / 2 + 1 / (2 · grid)`` (half a cell keeps tiny boxes from seeing a single cell). The
    per-head scales ``s`` are learned, initialised from ½ to 2, so the heads look at the box and at its surroundings.

    Args:
        heads: cross-attention heads.
    """

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.linspace(math.log(0.5), math.log(2.0), heads))

    def forward(self, reference: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``[B · heads, Q, h · w]`` additive attention logits of reference boxes ``[B, Q, 4]`` (cxcywh)."""
        B, Q, _ = reference.shape
        ys = (torch.arange(h, device=reference.device, dtype=reference.dtype) + 0.5) / h
        xs = (torch.arange(w, device=reference.device, dtype=reference.dtype) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        scale = self.log_scale.exp().to(reference.dtype)[None, :, None, None]  # [1, heads, 1, 1]
        cx, cy, bw, bh = (v[:, None, :, None] for v in reference.unbind(-1))  # [B, 1, Q, 1]
        sx, sy = scale * bw / 2 + 0.5 / w, scale * bh / 2 + 0.5 / h
        dx = (grid_x.reshape(1, 1, 1, -1) - cx) / sx
        dy = (grid_y.reshape(1, 1, 1, -1) - cy) / sy
        return (-0.5 * (dx**2 + dy**2)).reshape(B * self.log_scale.numel(), Q, h * w)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``log(x / (1 − x))`` with ``x`` clamped to ``[eps, 1 − eps]`` so it stays finite at 0 and 1."""
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


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
                token_ids: torch.Tensor | None,
                attn_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, MoEOutput | None]:
        """One layer; ``attn_bias [B·heads, Q, HW]`` is added to the cross-attention logits when given."""
        h = self.norm1(tgt)
        q = h + query_pos
        tgt = tgt + self.dropout(self.self_attn(q, q, h, need_weights=False)[0])
        h = self.norm2(tgt)
        cross = self.cross_attn(h + query_pos, memory + memory_pos, memory, attn_mask=attn_bias, need_weights=False)
        tgt = tgt + self.dropout(cross[0])
        h = self.norm3(tgt)
        if isinstance(self.ffn, MoELayer):
            moe = self.ffn(h, token_ids)
            return tgt + self.dropout(moe.y), moe
        return tgt + self.dropout(self.ffn(h)), None


def build_backbone(name: str, stride: int) -> nn.Module:
    """A timm feature extractor (random init) returning only its ``stride`` map."""
    import timm

    try:
        probe = timm.create_model(name, pretrained=False, features_only=True)
    except RuntimeError as err:
        raise ZooValueError(f"model.backbone={name!r}: timm cannot build it as a feature extractor ({err})") from None
    reductions = probe.feature_info.reduction()
    check_arg(stride in reductions, "model.backbone", name, f"a timm model with a stride-{stride} feature map")
    return timm.create_model(name, pretrained=False, features_only=True, out_indices=(reductions.index(stride),),
                             **BACKBONE_KWARGS.get(name, {}))


class DetrLite(nn.Module):
    """A small DETR (module docstring) for ``num_classes`` classes, with DAB-DETR's anchor-box queries and
    Deformable DETR's iterative box refinement.

    The backbone map (stride ``cfg.stride``) is projected to ``d_model`` by a 1×1 conv; its 2-D sine positions are
    added once to the encoder input (``nn.TransformerEncoderLayer`` takes none per layer) and again to the
    cross-attention keys. Each query has a learned content vector and a learned reference box; a decoder layer's
    query position is an MLP of the sine encoding of its reference box, and its output (through one shared
    LayerNorm) feeds the class head and the box head, whose 4 outputs are a delta added to the reference box in
    inverse-sigmoid space. The refined box, detached, is the next layer's reference (Deformable DETR).

    Args:
        cfg: the model config.
        num_classes: C, the unified classes (logits have C columns with the focal class loss, C + 1 with softmax,
            the last "no object").
        num_experts: E of the ``moe`` decoder (the split decoder has ``cfg.split_groups`` parts instead).
        image_size: the square input size in pixels (a multiple of ``cfg.stride``).
    """

    def __init__(self, cfg: ModelConfig, num_classes: int, num_experts: int, image_size: int) -> None:
        super().__init__()
        check_arg(isinstance(num_classes, int) and num_classes >= 1, "num_classes", num_classes, "a positive int")
        check_arg(isinstance(num_experts, int) and num_experts >= 1, "num_experts", num_experts, "a positive int")
        check_arg(image_size % cfg.stride == 0, "image_size", image_size, f"a multiple of {cfg.stride}")
        check_arg(cfg.decoder != "moe" or cfg.k <= num_experts, "model.k", cfg.k,
                  f"an int in [1, {num_experts}] (the experts)")
        d = cfg.d_model
        self.cfg, self.num_classes, self.image_size = cfg, num_classes, image_size
        self.sigmoid = cfg.class_loss == "focal"
        self.backbone = build_backbone(cfg.backbone, cfg.stride)
        self.input_proj = nn.Conv2d(self.backbone.feature_info.channels()[-1], d, kernel_size=1)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, cfg.ffn_hidden, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.encoder_layers, norm=nn.LayerNorm(d),
                                             enable_nested_tensor=False)
        self.query_content = nn.Embedding(cfg.queries, d)
        self.reference = None if cfg.two_stage else nn.Embedding(cfg.queries, 4)
        self.ref_pos = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, d))
        self.box_prior = BoxAttentionPrior(cfg.heads) if cfg.box_attention else None
        tokens = (image_size // cfg.stride) ** 2
        check_arg(not cfg.two_stage or cfg.queries <= tokens, "model.queries", cfg.queries,
                  f"at most the {tokens} memory tokens the two-stage proposals are chosen from")
        columns = num_classes + (0 if self.sigmoid else 1)
        if cfg.two_stage:
            self.enc_class = nn.Linear(d, columns)
            self.enc_box = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4))
        self.layers = nn.ModuleList(
            DecoderLayer(d, cfg.heads, build_ffn(cfg, num_experts, i in cfg.moe_layers), cfg.dropout)
            for i in range(cfg.decoder_layers))
        self.norm = nn.LayerNorm(d)
        self.class_head = nn.Linear(d, columns)
        self.box_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4))
        self._init_queries()

    def _init_queries(self) -> None:
        """Reference centres uniform over the image, sizes ``INIT_BOX_SIZE``; zero last box layers (the first
        prediction is the reference box, a proposal its cell's anchor); with the focal loss a class bias of
        ``−log((1 − π) / π)``, π = 0.01, so every class starts at probability π (RetinaNet's prior)."""
        if self.reference is not None:
            with torch.no_grad():
                self.reference.weight[:, :2].uniform_(0, 1)
                self.reference.weight[:, 2:].fill_(INIT_BOX_SIZE)
                self.reference.weight.copy_(inverse_sigmoid(self.reference.weight))
        heads = [(self.box_head, self.class_head)]
        if self.cfg.two_stage:
            heads.append((self.enc_box, self.enc_class))
        for box, cls in heads:
            nn.init.zeros_(box[-1].weight)
            nn.init.zeros_(box[-1].bias)
            if self.sigmoid:
                nn.init.constant_(cls.bias, -math.log((1 - PRIOR_PROB) / PRIOR_PROB))

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
        tgt = self.query_content.weight[None].expand(B, -1, -1)
        enc_logits = enc_boxes = None
        if self.reference is not None:
            reference = self.reference.weight.sigmoid()[None].expand(B, -1, -1)
        else:
            enc_logits, enc_boxes = self.proposals(memory, h, w, class_mask)
            scores = enc_logits[..., :self.num_classes].max(-1).values
            top = scores.topk(self.cfg.queries, dim=1).indices
            reference = enc_boxes.gather(1, top[..., None].expand(-1, -1, 4)).detach()
        token_ids = None
        if self.cfg.decoder == "moe" and self.cfg.routing == "oracle":
            if expert_of_image is None:
                raise ZooValueError("model.routing=oracle needs each image's expert id (expert_of_image)")
            token_ids = expert_of_image[:, None].expand(B, self.cfg.queries)
        hidden, boxes, moe_outputs = [], [], {}
        for i, layer in enumerate(self.layers):
            query_pos = self.ref_pos(box_sine(reference, d).to(tgt.dtype))
            bias = self.box_prior(reference, h, w) if self.box_prior is not None else None
            tgt, moe = layer(tgt, query_pos, memory, pos, token_ids, bias)
            if moe is not None:
                moe_outputs[f"decoder{i}"] = moe
            hs = self.norm(tgt)
            box = (self.box_head(hs) + inverse_sigmoid(reference)).sigmoid()
            hidden.append(hs)
            boxes.append(box)
            reference = box.detach()
        logits = self.mask_classes(self.class_head(torch.stack(hidden)), class_mask)
        aux, stats = collect(moe_outputs)
        router_logits = {name: m.routing.logits.reshape(B, self.cfg.queries, -1) for name, m in moe_outputs.items()}
        chosen = {}
        for name, m in moe_outputs.items():
            requested = m.routing.requested_ids if m.routing.requested_ids is not None else m.routing.ids
            chosen[name] = requested[:, 0].reshape(B, self.cfg.queries)
        return DetOutput(logits, torch.stack(boxes), aux, stats, router_logits, chosen, self.sigmoid, enc_logits,
                         enc_boxes)

    def mask_classes(self, logits: torch.Tensor, class_mask: torch.Tensor | None) -> torch.Tensor:
        """``logits [..., B, N, columns]`` with the classes outside ``class_mask [B, C]`` set to ``MASKED_LOGIT``."""
        if class_mask is None:
            return logits
        B = logits.shape[-3]
        check_arg(tuple(class_mask.shape) == (B, self.num_classes), "class_mask.shape", tuple(class_mask.shape),
                  f"[{B}, {self.num_classes}]")
        keep = class_mask if self.sigmoid else torch.cat((class_mask, class_mask.new_ones(B, 1)), dim=1)
        return logits.masked_fill(~keep[:, None, :], MASKED_LOGIT)

    def proposals(self, memory: torch.Tensor, h: int, w: int,
                  class_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two-stage proposals (Deformable DETR, DINO): per memory token class logits and a box refined from the
        token's anchor (its cell's centre, side ``INIT_BOX_SIZE``), ``[B, HW, columns]`` and ``[B, HW, 4]``."""
        ys = (torch.arange(h, device=memory.device, dtype=memory.dtype) + 0.5) / h
        xs = (torch.arange(w, device=memory.device, dtype=memory.dtype) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        size = torch.full_like(grid_x, INIT_BOX_SIZE)
        anchors = torch.stack((grid_x, grid_y, size, size), dim=-1).reshape(h * w, 4)
        boxes = (self.enc_box(memory) + inverse_sigmoid(anchors)).sigmoid()
        return self.mask_classes(self.enc_class(memory), class_mask), boxes


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

    def inactive_params(self) -> int:
        """Parameters an image leaves idle (:func:`zoo.moe.count_params`): every detector but one, and the idle
        experts of the one it runs."""
        total, active = count_params(self.detectors[0])
        return total * len(self.detectors) - active

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
        out = DetOutput(logits, boxes, sigmoid=first.sigmoid)
        if first.enc_logits is not None:
            out.enc_logits = first.enc_logits.new_empty(B, *first.enc_logits.shape[1:])
            out.enc_boxes = first.enc_boxes.new_empty(B, *first.enc_boxes.shape[1:])
        for k, idx, part in parts:
            logits[:, idx], boxes[:, idx] = part.logits, part.boxes
            if part.enc_logits is not None:
                out.enc_logits[idx], out.enc_boxes[idx] = part.enc_logits, part.enc_boxes
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

    Class probabilities are the sigmoids of the logits (``out.sigmoid``) or their softmax over the C + 1 columns
    without the no-object one; each image keeps its
    ``top`` best (query, class) pairs over all Q × C of them (Deformable DETR's top-k), so a query may give
    several candidates, which COCO AP rewards when the best class is unsure.

    Args:
        out: the detector output.
        image_sizes: ``[B, 2]`` (height, width) in pixels of the padded input the boxes are scaled to.
        top: detections kept per image (at most Q·C).

    Returns:
        Per image ``boxes [N, 4]`` xyxy pixels (float, clipped to the input), ``scores [N]`` and ``labels [N]``
        (int64), best first.
    """
    from torchvision.ops import box_convert

    logits = out.logits[-1].float()
    probs = logits.sigmoid() if out.sigmoid else logits.softmax(-1)[..., :-1]
    B, Q, C = probs.shape
    scores, flat = probs.reshape(B, Q * C).topk(min(top, Q * C), dim=-1)
    queries, labels = flat // C, flat % C
    boxes = box_convert(out.boxes[-1].float(), "cxcywh", "xyxy").clamp(0, 1)
    h, w = image_sizes.to(boxes).unbind(-1)
    scale = torch.stack((w, h, w, h), dim=-1)[:, None]
    boxes = boxes.gather(1, queries[..., None].expand(-1, -1, 4)) * scale
    return [{"boxes": boxes[b], "scores": scores[b], "labels": labels[b]} for b in range(B)]
