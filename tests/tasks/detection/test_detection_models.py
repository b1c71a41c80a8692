"""DETR-lite detectors: output contract per decoder row and class loss, anchor-box queries and iterative box
refinement against a re-computation, box sine encodings, the split FFN against the dense FFN it was cut from,
oracle and learned routing, class masks, per-dataset wrapping, parameter counts and postprocessing."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from zoo.errors import ZooValueError
from zoo.moe import FFNExperts, MoELayer, SplitRouter, count_params, split_dense_ffn
from zoo.tasks.detection.config import ModelConfig
from zoo.tasks.detection.models import (
    MASKED_LOGIT,
    DenseFFN,
    DetOutput,
    DetrLite,
    PerDatasetDetector,
    box_sine,
    build_detector,
    inverse_sigmoid,
    postprocess,
    sine_positions,
)

C, E, S, B = 5, 3, 32, 3
SMALL = {"d_model": 16, "heads": 2, "encoder_layers": 1, "decoder_layers": 3, "queries": 6, "ffn_hidden": 16,
         "moe_layers": [0, 2]}


def small(**kw) -> ModelConfig:
    """A small config; rows without the MoE decoder get no routing loss (DAMEX's needs it)."""
    loss = {} if kw.get("decoder", "moe") == "moe" else {"routing_loss": "none"}
    return ModelConfig(**{**SMALL, **loss, **kw})


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("kw", [{"decoder": "dense"}, {"decoder": "moe"}, {"decoder": "moe", "routing": "oracle"},
                                {"decoder": "split"}, {"decoder": "moe", "k": 2, "capacity_factor": 0.5},
                                {"decoder": "moe", "class_loss": "softmax"}, {"decoder": "dense", "stride": 4}])
def test_output_contract_of_every_decoder_row(kw):
    cfg = small(**kw)
    model = build_detector(cfg, C, E, S)
    assert isinstance(model, DetrLite)
    experts = torch.tensor([0, 2, 1])
    out = model(torch.randn(B, 3, S, S), experts)
    L, Q = cfg.decoder_layers, cfg.queries
    sigmoid = cfg.class_loss == "focal"
    assert out.sigmoid == sigmoid
    assert out.logits.shape == (L, B, Q, C + (0 if sigmoid else 1)) and out.boxes.shape == (L, B, Q, 4)
    assert ((out.boxes > 0) & (out.boxes < 1)).all()
    moe_names = [] if cfg.decoder == "dense" else ["decoder0", "decoder2"]
    assert list(out.router_logits) == moe_names and list(out.chosen) == moe_names and list(out.stats) == moe_names
    width = cfg.split_groups if cfg.decoder == "split" else E
    for name in moe_names:
        assert out.router_logits[name].shape == (B, Q, width) and out.router_logits[name].dtype == torch.float32
        assert out.chosen[name].shape == (B, Q) and out.chosen[name].dtype == torch.int64
    assert out.aux == {}  # routers carry no loss of their own: the routing loss is the objective's
    assert out.enc_logits.shape[:2] == out.enc_boxes.shape[:2] == (B, (S // cfg.stride) ** 2)
    (out.logits.sum() + out.boxes.sum() + out.enc_logits.sum() + out.enc_boxes.sum()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "gate" not in n)


def test_backbone_gives_the_stride_map_and_bad_names_are_refused():
    model = build_detector(small(), C, E, 64)
    assert model.backbone(torch.randn(1, 3, 64, 64))[-1].shape[-2:] == (8, 8)
    model = build_detector(small(stride=4), C, E, 64)
    assert model.backbone(torch.randn(1, 3, 64, 64))[-1].shape[-2:] == (16, 16)
    with pytest.raises(ZooValueError, match="model.backbone"):
        build_detector(small(backbone="no_such_net"), C, E, S)
    with pytest.raises(ZooValueError, match="image_size"):
        build_detector(small(), C, E, 36)


def test_sine_positions_against_the_formula():
    h, w, d = 3, 4, 8
    pos = sine_positions(h, w, d, torch.device("cpu"))
    assert pos.shape == (h * w, d)
    for i, j in itertools.product(range(h), range(w)):
        y, x = (i + 0.5) / h * 2 * math.pi, (j + 0.5) / w * 2 * math.pi
        row = []
        for v in (y, x):
            for c in range(d // 2):
                angle = v / 10000 ** (2 * (c // 2) / (d // 2))
                row.append(math.sin(angle) if c % 2 == 0 else math.cos(angle))
        torch.testing.assert_close(pos[i * w + j], torch.tensor(row))


def test_box_sine_of_a_cell_centre_is_the_grid_encoding_of_that_cell():
    h = w = 4
    d = 16
    grid = sine_positions(h, w, d, torch.device("cpu"))
    boxes = torch.tensor([[(j + 0.5) / w, (i + 0.5) / h, 0.3, 0.1] for i in range(h) for j in range(w)])
    enc = box_sine(boxes, d)
    assert enc.shape == (h * w, 2 * d)
    torch.testing.assert_close(enc[:, :d], grid)
    torch.testing.assert_close(enc[:, d:], box_sine(boxes[:, [3, 2, 3, 2]], d)[:, :d])  # w, h encoded as cy, cx
    torch.testing.assert_close(inverse_sigmoid(torch.tensor([0.25, 0.0])),
                               torch.tensor([math.log(1 / 3), math.log(1e-5)]),
                               rtol=1e-4, atol=1e-4)
    assert torch.isfinite(inverse_sigmoid(torch.tensor(1.0)))


def test_boxes_start_at_the_learned_reference_boxes():
    model = build_detector(small(two_stage=False), C, E, S)
    out = model(torch.randn(B, 3, S, S))
    ref = model.reference.weight.sigmoid()
    torch.testing.assert_close(out.boxes, ref.expand_as(out.boxes))
    assert (ref[:, 2:] - 0.2).abs().max() < 1e-4 and ((ref[:, :2] > 0) & (ref[:, :2] < 1)).all()
    prior = out.logits.sigmoid()
    torch.testing.assert_close(prior.mean(), torch.tensor(0.01), atol=0.01, rtol=0)  # RetinaNet's prior


def test_iterative_refinement_adds_each_layer_delta_to_the_detached_previous_box():
    model = build_detector(small(two_stage=False), C, E, S)
    torch.nn.init.normal_(model.box_head[-1].weight, std=0.5)  # non-zero deltas
    hidden = []
    model.norm.register_forward_hook(lambda module, args, result: hidden.append(result))
    out = model(torch.randn(B, 3, S, S))
    previous = model.reference.weight.sigmoid().expand(B, -1, -1)
    for layer, hs in enumerate(hidden):
        expected = torch.sigmoid(model.box_head(hs) + torch.logit(previous.clamp(1e-5, 1 - 1e-5)))
        torch.testing.assert_close(out.boxes[layer], expected)
        previous = expected
    # The first layer's head output reaches the last layer's box only as the detached reference: no gradient.
    hidden.clear()
    out = model(torch.randn(B, 3, S, S))
    (grad_last,) = torch.autograd.grad(out.boxes[-1].sum(), hidden[0], retain_graph=True, allow_unused=True)
    assert grad_last is None or (grad_last == 0).all()
    (grad_first,) = torch.autograd.grad(out.boxes[0].sum(), hidden[0])
    assert grad_first.abs().sum() > 0


def test_two_stage_references_are_the_top_scoring_proposals():
    model = build_detector(small(), C, E, S)
    torch.nn.init.normal_(model.enc_box[-1].weight, std=0.5)
    torch.nn.init.normal_(model.enc_class.weight, std=1.0)
    out = model(torch.randn(B, 3, S, S))
    tokens = (S // 8) ** 2
    assert out.enc_logits.shape == (B, tokens, C) and out.enc_boxes.shape == (B, tokens, 4)
    for b in range(B):  # at init the decoder's deltas are zero: its first boxes are the chosen proposals
        best = out.enc_logits[b].max(-1).values.topk(6).indices
        torch.testing.assert_close(out.boxes[0, b], out.enc_boxes[b, best])
    # Each proposal refines its cell's anchor: with a zero delta it is the cell centre at side INIT_BOX_SIZE.
    torch.nn.init.zeros_(model.enc_box[-1].weight)
    out = model(torch.randn(1, 3, S, S))
    centres = (torch.arange(4) + 0.5) / 4
    torch.testing.assert_close(out.enc_boxes[0, :, 0], centres.repeat(4))
    torch.testing.assert_close(out.enc_boxes[0, :, 1], centres.repeat_interleave(4))
    torch.testing.assert_close(out.enc_boxes[0, :, 2:], torch.full((tokens, 2), 0.2))
    with pytest.raises(ZooValueError, match="model.queries"):
        build_detector(small(queries=17), C, E, S)  # 16 memory tokens at 32 px
    assert build_detector(small(queries=17, two_stage=False), C, E, S).reference is not None


def test_box_attention_prior_is_a_gaussian_around_the_reference_box():
    model = build_detector(small(), C, E, S)
    prior = model.box_prior
    ref = torch.tensor([[[0.5, 0.25, 0.4, 0.2]]])
    bias = prior(ref, 4, 4)
    assert bias.shape == (2, 1, 16)
    scales = prior.log_scale.exp()
    for head in range(2):
        sx, sy = scales[head] * 0.4 / 2 + 0.5 / 4, scales[head] * 0.2 / 2 + 0.5 / 4
        for i, j in itertools.product(range(4), range(4)):
            x, y = (j + 0.5) / 4, (i + 0.5) / 4
            want = -0.5 * (((x - 0.5) / sx) ** 2 + ((y - 0.25) / sy) ** 2)
            assert float(bias[head, 0, i * 4 + j]) == pytest.approx(float(want.detach()), rel=1e-5)
    assert build_detector(small(box_attention=False), C, E, S).box_prior is None


# ---------------------------------------------------------------- split FFN


def split_layer(dense: DenseFFN, groups: int, k: int) -> MoELayer:
    w1, w2 = split_dense_ffn(dense.experts.w1[0].detach(), dense.experts.w2[0].detach(), groups)
    bank = FFNExperts(groups, w1.shape[1], w1.shape[2])
    with torch.no_grad():
        bank.w1.copy_(w1)
        bank.w2.copy_(w2)
    return MoELayer(SplitRouter(w1.shape[1], groups, k), bank)


def test_split_dense_phase_equals_the_dense_ffn():
    dense = DenseFFN(8, 12)
    layer = split_layer(dense, 4, 2)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(layer(x).y, dense(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ZooValueError, match="groups"):
        split_dense_ffn(dense.experts.w1[0], dense.experts.w2[0], 5)
    with pytest.raises(ZooValueError, match="groups"):
        split_dense_ffn(dense.experts.w1[0], dense.experts.w2[0], 0)
    with pytest.raises(ZooValueError, match="w2.shape"):
        split_dense_ffn(dense.experts.w1[0], dense.experts.w2[0].T, 4)


def test_split_gate_learns_in_the_dense_phase_so_sparsifying_starts_from_learned_preferences():
    torch.manual_seed(0)
    layer = split_layer(DenseFFN(8, 12), 4, 2)
    x = torch.randn(6, 8)
    layer(x).y.pow(2).sum().backward()
    grad = layer.router.gate.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    with torch.no_grad():
        layer.router.gate.weight.normal_()
    layer.router.sparsify()
    chosen = layer(x).routing.ids
    assert len({tuple(sorted(row)) for row in chosen.tolist()}) > 1  # tokens no longer share one choice


def test_split_decoder_starts_as_the_dense_ffn_it_was_cut_from():
    model = build_detector(small(decoder="split", split_groups=4, split_k=2), C, E, S)
    ffn = model.layers[0].ffn
    dense = DenseFFN(16, 16)
    with torch.no_grad():  # glue the parts back together: the dense FFN the layer stands for
        dense.experts.w1[0].copy_(ffn.experts.w1.permute(1, 0, 2).reshape(16, 16))
        dense.experts.w2[0].copy_(ffn.experts.w2.reshape(16, 16))
    x = torch.randn(7, 16)
    torch.testing.assert_close(ffn(x).y, dense(x), rtol=1e-5, atol=1e-6)
    assert isinstance(model.layers[1].ffn, DenseFFN)  # layer 1 is not in moe_layers


def test_sparsify_keeps_parameters_and_rescales_uniform_routing_to_the_dense_output():
    G, k = 4, 2
    model = build_detector(small(decoder="split", split_groups=G, split_k=k), C, E, S)
    params = {n: p for n, p in model.named_parameters()}
    total, dense_active = count_params(model)
    assert dense_active == total
    model.sparsify()
    assert {n: p for n, p in model.named_parameters()} == params  # same objects: the optimizer keeps them
    per_part = 2 * 16 * (16 // G)
    assert count_params(model) == (total, total - 2 * (G - k) * per_part)
    assert bool(model.state_dict()["layers.0.ffn.router.sparse"])

    layer = model.layers[0].ffn
    x = torch.randn(9, 16)
    out = layer(x)
    assert out.routing.ids.shape == (9, k)
    torch.testing.assert_close(out.routing.weights, torch.full((9, k), G / k))  # G²/k · (1/G) at a zero gate
    # Averaged over every k-subset of the parts, the rescaled output is the dense sum of all parts.
    parts = [layer.experts(x, torch.full((9, 1), e), torch.ones(9, 1)) for e in range(G)]
    subsets = list(itertools.combinations(range(G), k))
    mean = sum(G / k * sum(parts[e] for e in s) for s in subsets) / len(subsets)
    torch.testing.assert_close(mean, sum(parts), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.y, G / k * sum(parts[int(e)] for e in out.routing.ids[0]), rtol=1e-5, atol=1e-6)
    # The zero-initialised gate learns from the task loss once sparse.
    out.y.pow(2).sum().backward()
    assert layer.router.gate.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- routing rows


def test_oracle_routing_sends_every_query_to_its_image_expert():
    model = build_detector(small(routing="oracle"), C, E, S)
    experts = torch.tensor([2, 0, 2])
    out = model(torch.randn(B, 3, S, S), experts)
    for chosen in out.chosen.values():
        assert torch.equal(chosen, experts[:, None].expand(B, 6))
    with pytest.raises(ZooValueError, match="oracle"):
        model(torch.randn(B, 3, S, S))


def test_learned_routing_chooses_the_router_argmax_before_capacity_drops():
    model = build_detector(small(capacity_factor=0.3), C, E, S).eval()
    out = model(torch.randn(B, 3, S, S))
    for name in out.chosen:
        assert torch.equal(out.chosen[name], out.router_logits[name].argmax(-1))
    router = model.layers[0].ffn.router
    assert router.k == 1 and router.noise_std == pytest.approx(1 / E) and router.balance_coef == 0


@pytest.mark.parametrize("class_loss", ["focal", "softmax"])
def test_class_mask_hides_other_datasets_classes_but_keeps_no_object(class_loss):
    # Learned references: with two-stage ones the mask would also change which proposals are chosen.
    model = build_detector(small(decoder="dense", class_loss=class_loss, two_stage=False), C, E, S).eval()
    images = torch.randn(B, 3, S, S)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 1, 1, 1], [1, 0, 1, 0, 1]], dtype=torch.bool)
    plain, masked = model(images), model(images, None, mask)
    if class_loss == "softmax":
        mask = torch.cat((mask, torch.ones(B, 1, dtype=torch.bool)), 1)
    keep = mask[None, :, None].expand_as(plain.logits)
    torch.testing.assert_close(masked.logits[keep], plain.logits[keep])
    assert (masked.logits[~keep] == MASKED_LOGIT).all()
    torch.testing.assert_close(masked.boxes, plain.boxes)
    two_stage = build_detector(small(decoder="dense", class_loss=class_loss), C, E, S).eval()
    proposals = two_stage(images, None, mask[:, :C]).enc_logits
    assert (proposals[~mask[:, None].expand_as(proposals)] == MASKED_LOGIT).all()


def test_per_dataset_detector_runs_each_image_through_its_own_detector():
    cfg = small(decoder="moe", per_dataset=True, capacity_factor=100.0)  # no drops: images do not interact
    model = build_detector(cfg, C, E, S, 3).eval()
    assert isinstance(model, PerDatasetDetector) and len(model.detectors) == 3
    images, datasets = torch.randn(4, 3, S, S), torch.tensor([2, 0, 2, 1])
    out = model(images, datasets)
    for b, k in enumerate(datasets.tolist()):
        alone = model.detectors[k](images[b : b + 1])
        torch.testing.assert_close(out.logits[:, b], alone.logits[:, 0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.boxes[:, b], alone.boxes[:, 0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.router_logits["decoder0"][b], alone.router_logits["decoder0"][0])
        torch.testing.assert_close(out.enc_logits[b], alone.enc_logits[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.enc_boxes[b], alone.enc_boxes[0], rtol=1e-4, atol=1e-5)
    assert set(out.stats) == {f"dataset{k}/decoder{i}" for k in range(3) for i in (0, 2)}
    with pytest.raises(ZooValueError, match="per_dataset"):
        model(images)
    with pytest.raises(ZooValueError, match="dataset indices"):
        model(images, torch.tensor([0, 1, 3, 0]))


@pytest.mark.parametrize("decoder", ["dense", "moe"])
def test_active_params_of_one_model_per_dataset_are_one_detector(decoder):
    one = count_params(build_detector(small(decoder=decoder), C, E, S))
    assert count_params(build_detector(small(decoder=decoder, per_dataset=True), C, E, S, 3)) == (3 * one[0], one[1])


def test_active_params_of_top1_moe_equal_its_dense_twin_plus_routers():
    torch.manual_seed(1)
    moe = build_detector(small(decoder="moe", k=1), C, E, S)
    torch.manual_seed(1)
    dense = build_detector(small(decoder="dense"), C, E, S)
    total, active = count_params(moe)
    dense_total, dense_active = count_params(dense)
    routers = 2 * 16 * E  # one gate [E, D] per MoE layer
    assert dense_total == dense_active and active == dense_total + routers
    assert total == active + 2 * (E - 1) * 2 * 16 * 16


# ---------------------------------------------------------------- postprocess


def test_postprocess_top_query_class_pairs_in_pixels():
    probs = torch.tensor([[[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]]])  # one image, Q = 2, C = 2 (+ no object)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.5, 0.5, 1.0]]])
    out = DetOutput(probs.log()[None], boxes[None])  # softmax scores
    (pred,) = postprocess(out, torch.tensor([[100, 200]]), top=3)  # height 100, width 200
    torch.testing.assert_close(pred["scores"], torch.tensor([0.6, 0.3, 0.2]))
    assert pred["labels"].tolist() == [0, 1, 1]
    first = torch.tensor([80.0, 30.0, 120.0, 70.0])  # cx 100, cy 50, w 40, h 40
    second = torch.tensor([0.0, 0.0, 100.0, 100.0])
    torch.testing.assert_close(pred["boxes"], torch.stack((first, first, second)))
    (everything,) = postprocess(out, torch.tensor([[100, 200]]))
    assert len(everything["scores"]) == 4  # top is capped at Q·C


def test_postprocess_of_sigmoid_scores():
    logits = torch.tensor([[[2.0, -1.0], [0.5, 3.0]]])  # one image, Q = 2, C = 2, no no-object column
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.5, 0.5, 1.0]]])
    (pred,) = postprocess(DetOutput(logits[None], boxes[None], sigmoid=True), torch.tensor([[10, 10]]), top=3)
    torch.testing.assert_close(pred["scores"], torch.tensor([3.0, 2.0, 0.5]).sigmoid())
    assert pred["labels"].tolist() == [1, 0, 0]
    torch.testing.assert_close(pred["boxes"][1], torch.tensor([4.0, 3.0, 6.0, 7.0]))


@pytest.mark.parametrize("class_loss", ["focal", "softmax"])
def test_postprocess_reads_the_last_layer(class_loss):
    model = build_detector(small(class_loss=class_loss), C, E, S).eval()
    out = model(torch.randn(2, 3, S, S))
    preds = postprocess(out, torch.tensor([[S, S]] * 2), top=10)
    last = out.logits[-1].sigmoid() if out.sigmoid else out.logits[-1].softmax(-1)[..., :-1]
    for b, pred in enumerate(preds):
        torch.testing.assert_close(pred["scores"], last[b].flatten().topk(10).values)
        assert (pred["boxes"] >= 0).all() and (pred["boxes"] <= S).all()
