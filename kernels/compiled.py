"""The ``compiled`` CPU backend: a capacity-padded batched chain, compiled by Inductor (C++), dynamic row counts.

The rows of each expert are laid out in a ``[E, C, D]`` buffer (``C`` = the fullest expert's row count rounded
up to a coarse bucket, so that it takes few distinct values), and the chain gather → ``bmm`` → activation →
``bmm`` → slot gather → weighted sum over k runs as one function under ``torch.compile``: Inductor fuses the
gathers, the activation, the dtype casts and the combine into a few C++ loops around the two batched GEMMs, and
AOTAutograd derives and compiles the backward. Padding rows read a zero row of ``x`` and are never read back, so
they add FLOPs (≤ 1/8 of the fullest expert's rows above it) but nothing to the result or the gradients.

Only the host-side step stays eager: the sort by expert and the two index maps (padded row → token, slot →
padded row), which give every tensor entering the compiled region a shape fixed by (T, k, E, C, D, F). The row
counts (T, E·C, T·k) are marked dynamic and D, F, E, k static, so a new T or C reuses the same code instead of
recompiling: one compile per (E, D, F, k, dtype, activation, weighted or not, which inputs need gradients), a few
seconds each, then cached by torch for the process (and on disk by Inductor).

Where it pays (docs/kernels.md, "The compiled CPU path"): bf16 with fine-grained experts, where the separate
passes of the other backends over ``[T·k, D]`` buffers cost more than the GEMMs. Its roundings differ from the
other backends' (about 1e-6 in fp32), it costs a compile per layer shape, and nothing promises that Inductor's
scatter-add into the input gradient keeps its order (repeated calls were bitwise equal when checked): ``auto``
therefore picks it only by measurement (``ZOO_KERNELS_AUTOTUNE``), never by the static rule. Without a working C++ compiler the compile step
fails once, and the backend declines from then on (``auto`` moves on; an explicit request names the others).
"""

from __future__ import annotations

import os

import torch

from .activations import apply_activation
from .dispatch import accumulation_dtype, sort_slots

#: Run the chain eagerly instead of compiling it (same code, same results up to rounding): ``ZOO_KERNELS_COMPILE=0``
#: at import, for smoke runs; the kernel tests set it so that their many dtype × activation × gradient
#: combinations do not each compile.
EAGER = os.environ.get("ZOO_KERNELS_COMPILE", "").strip() == "0"

_compiled_chain = None


def compiled_unsupported(x_TD: torch.Tensor, w1_EDF: torch.Tensor, w3_EDF: torch.Tensor | None) -> str | None:
    """Why ``compiled`` cannot run these inputs, or None if it can."""
    if x_TD.device.type != "cpu":
        return f"tensors on {x_TD.device.type}: the compiled path is the CPU one (it sizes its buffers on the host)"
    if x_TD.dtype not in (torch.float32, torch.bfloat16):
        return f"dtype {x_TD.dtype} (the compiled path takes float32 or bfloat16)"
    return None


def capacity(max_rows: int) -> int:
    """Rows per expert of the padded buffer: ``max_rows`` rounded up to a multiple of 1/8 of its power of two.

    So the padding stays under 1/8 of the fullest expert and only a few values occur as the load moves.
    """
    quantum = 1 << max(0, max_rows.bit_length() - 4)
    return -(-max_rows // quantum) * quantum


def padded_maps(ids_TK: torch.Tensor, num_experts: int, num_tokens: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(src_P, pos_S, C)``: the token each padded row reads (``num_tokens`` = the zero row for padding), the
    padded row each slot reads back (``E·C`` = the zero row for a −1 slot), and the capacity ``C``."""
    slots = sort_slots(ids_TK, num_experts)
    counts_E = slots.counts_E
    C = capacity(int(counts_E.max())) if num_experts and slots.num_rows else 1
    expert_N = torch.repeat_interleave(torch.arange(num_experts), counts_E)
    first_E = torch.cumsum(counts_E, 0) - counts_E
    pos_N = expert_N * C + torch.arange(slots.num_rows) - first_E[expert_N]
    src_P = torch.full((num_experts * C,), num_tokens, dtype=torch.long).index_copy_(0, pos_N, slots.token_idx_N)
    pos_S = torch.full((ids_TK.numel(),), num_experts * C, dtype=torch.long).index_copy_(0, slots.slot_idx_N, pos_N)
    return src_P, pos_S, C


def _chain(
    x_TD: torch.Tensor,
    src_P: torch.Tensor,
    pos_S: torch.Tensor,
    weights_TK: torch.Tensor | None,
    w1_EDF: torch.Tensor,
    w2_EFD: torch.Tensor,
    w3_EDF: torch.Tensor | None,
    activation: str,
    k: int,
) -> torch.Tensor:
    """Padded gather → two batched GEMMs → slot gather → weighted sum (fp32 accumulation)."""
    E, D = w1_EDF.shape[0], w1_EDF.shape[1]
    T = x_TD.shape[0]
    x_pD = torch.cat([x_TD, x_TD.new_zeros(1, D)]).index_select(0, src_P).view(E, -1, D)
    g = torch.bmm(x_pD, w3_EDF) if w3_EDF is not None else None
    y_PD = torch.bmm(apply_activation(torch.bmm(x_pD, w1_EDF), activation, g), w2_EFD).view(-1, D)
    y_TKD = torch.cat([y_PD, y_PD.new_zeros(1, D)]).index_select(0, pos_S).view(T, k, D)
    if weights_TK is None:
        return y_TKD
    acc = accumulation_dtype(x_TD.dtype)
    return (weights_TK.to(acc).unsqueeze(2) * y_TKD.to(acc)).sum(1).to(x_TD.dtype)  # one fused loop under Inductor


def compile_chain(fn):
    """Compile the chain with Inductor; the row counts are marked dynamic per call (:func:`compiled_moe_ffn`)."""
    return torch.compile(fn, dynamic=False)


def _mark_row_dims_dynamic(*tensors: torch.Tensor | None) -> None:
    """Dim 0 (tokens, padded rows, slots) varies from call to call: symbolic, so a new T or capacity reuses the
    compiled code. D, F, E and k stay static, which lets Inductor vectorise along them (fully dynamic shapes ran
    the chain up to 2× slower)."""
    for t in tensors:
        if t is not None:
            torch._dynamo.maybe_mark_dynamic(t, 0)


#: Compiled variants of the chain one process may hold: one per (E, D, F, k, dtype, activation, weighted or not,
#: which inputs need gradients). Torch's default limit (8) is shared by every variant of the function and a
#: process timing many layer shapes (the kernels board) exceeds it, after which dynamo silently runs it eagerly.
RECOMPILE_LIMIT = 64


def _runner():
    global _compiled_chain
    if EAGER:
        return _chain
    if _compiled_chain is None:
        compiled = compile_chain(_chain)

        def run(*args):
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                return compiled(*args)

        _compiled_chain = run
    return _compiled_chain


def compiled_prepare(x_TD: torch.Tensor, w1_EDF: torch.Tensor, w3_EDF: torch.Tensor | None) -> None:
    """The compile step: one tiny inference call (gelu, or swiglu when gated) through the compiled chain in the
    inputs' dtype. It proves that Inductor can build C++ here and raises where it cannot (e.g. no compiler);
    the real shapes, and their backward, compile on their first call."""
    if EAGER:
        return
    E, D, F_, T, k = 3, 8, 8, 5, 2
    dtype = x_TD.dtype
    w3 = torch.randn(E, D, F_, dtype=dtype) if w3_EDF is not None else None
    ids = torch.tensor([[0, 1], [1, -1], [0, 0], [1, 0], [0, 1]])
    src_P, pos_S, _ = padded_maps(ids, E, T)
    x, weights = torch.randn(T, D, dtype=dtype), torch.rand(T, k, dtype=dtype)
    _mark_row_dims_dynamic(x, src_P, pos_S, weights)
    act = "swiglu" if w3 is not None else "gelu"
    with torch.no_grad():
        _runner()(x, src_P, pos_S, weights, torch.randn(E, D, F_, dtype=dtype), torch.randn(E, F_, D, dtype=dtype),
                  w3, act, k)


def compiled_moe_ffn(
    x_TD: torch.Tensor,
    ids_TK: torch.Tensor,
    weights_TK: torch.Tensor | None,
    w1_EDF: torch.Tensor,
    w2_EFD: torch.Tensor,
    w3_EDF: torch.Tensor | None,
    activation: str,
) -> torch.Tensor:
    src_P, pos_S, _ = padded_maps(ids_TK, w1_EDF.shape[0], x_TD.shape[0])
    if not EAGER:
        _mark_row_dims_dynamic(x_TD, src_P, pos_S, weights_TK)
    return _runner()(x_TD, src_P, pos_S, weights_TK, w1_EDF, w2_EFD, w3_EDF, activation, ids_TK.shape[1])
