"""The audio task's token decoder, a scaled-down UniMoE-Audio: a pre-norm decoder-only transformer reads a task
token and a character-level text/caption prefix, then the delayed codec frames, whose ``Q`` codebook embeddings are
summed per frame; one head predicts all ``Q`` codebooks of the next frame in parallel. Each block's FFN is a dense
GELU MLP or a ``zoo.moe`` MoE layer (UniMoE-style: top-p 0.7 over 8 routed experts + 1 null + 2 shared, see
:func:`unimoe_config`), so the dense and MoE rows of the board differ only there. Generation samples frame by
frame with a per-layer key/value cache (or, for comparison, by recomputing the whole sequence each step) and
keeps the delay pattern: codebook ``q`` is BOS for its first ``q`` steps, and a row ends ``max delay`` steps after
codebook 0 emits EOS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import check_arg
from zoo.module import ModelOutput
from zoo.moe import ExpertStats, MoEConfig, MoELayer

from .codec import BOS, EOS, NUM_CODEBOOKS, PAD, VOCAB


def unimoe_config(d_hidden: int = 256, p: float = 0.7) -> MoEConfig:
    """UniMoE-Audio's MoE FFN: top-p over 8 routed experts and 1 null expert, plus 2 always-on shared experts that
    the gate scores too (the weights are a softmax over the selected and the shared experts), router input jitter
    0.01.

    Args:
        d_hidden: hidden width of each expert.
        p: top-p mass threshold.
    """
    return MoEConfig(num_experts=8, k=1, d_hidden=d_hidden, router="top_p", router_kwargs={"p": p, "jitter": 0.01},
                     num_null=1, num_shared=2, shared_routed=True)


def active_experts(ids: torch.Tensor, num_ffn: int) -> torch.Tensor:
    """Mean number of routed FFN experts per token in a routing's ``ids[T, k]`` (−1 and special ids excluded).

    Args:
        ids: ``[T, k]`` expert ids, −1 for an empty slot; ids ``>= num_ffn`` are special (null) experts.
        num_ffn: number of routed FFN experts.
    """
    return ((ids >= 0) & (ids < num_ffn)).sum(-1).float().mean()


def null_rate(ids: torch.Tensor, num_ffn: int, num_null: int) -> torch.Tensor:
    """Fraction of tokens whose selection includes a null expert (ids ``[num_ffn, num_ffn + num_null)``, valid
    when null experts are the only special experts).

    Args:
        ids: ``[T, k]`` expert ids, −1 for an empty slot.
        num_ffn: number of routed FFN experts.
        num_null: number of null experts.
    """
    return ((ids >= num_ffn) & (ids < num_ffn + num_null)).any(-1).float().mean()


def mean_active_experts(stats: dict[str, ExpertStats]) -> float:
    """Mean over MoE layers of the routed FFN experts per token (``ExpertStats.active_experts``)."""
    return float(torch.stack([s.active_experts for s in stats.values()]).mean()) if stats else 0.0


@dataclass
class Generation:
    """Sampled delayed frames ``tokens[B, F, Q]`` (without the leading BOS frame) and, when asked for, the logits
    each frame was sampled from, ``[B, F, Q, vocab]``."""

    tokens: torch.Tensor
    logits: torch.Tensor | None = None


class _Attention(nn.Module):
    """Causal multi-head self-attention (SDPA) with an optional key/value cache and key padding mask."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None, key_valid: torch.Tensor | None) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        past = 0
        if cache is not None:
            if cache:
                past = cache[0].shape[2]
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = [k, v]
        if past == 0 and key_valid is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            keep = torch.arange(past + T, device=x.device) <= past + torch.arange(T, device=x.device)[:, None]
            if key_valid is not None:
                keep = keep & key_valid[:, None, None, :]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class _Block(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + ffn(norm(x))``, the FFN dense or MoE (the dense one without
    biases, so it cuts exactly into experts: :func:`zoo.moe.experts.split_dense_ffn`)."""

    def __init__(self, d_model: int, heads: int, ffn: str, moe: MoEConfig | None, dense_hidden: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = _Attention(d_model, heads)
        if ffn == "moe":
            self.ffn = MoELayer.from_config(moe, d_model)
        else:
            self.ffn = nn.Sequential(nn.Linear(d_model, dense_hidden, bias=False), nn.GELU(),
                                     nn.Linear(dense_hidden, d_model, bias=False))

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None, key_valid: torch.Tensor | None):
        x = x + self.attn(self.norm1(x), cache, key_valid)
        h = self.norm2(x)
        if isinstance(self.ffn, MoELayer):
            out = self.ffn(h)
            return x + out.y, out
        return x + self.ffn(h), None


class TokenDecoder(nn.Module):
    """Decoder-only transformer over ``[task token, text characters, delayed audio frames]``.

    Args:
        vocab: ids per codebook (codes + EOS, PAD, BOS).
        codebooks: Q, codebooks per frame.
        text_vocab: character ids of the text/caption prefix.
        num_tasks: distinct task ids (e.g. TTS, text-to-music).
        d_model: model width.
        layers: transformer blocks.
        heads: attention heads.
        ffn: ``"dense"`` (GELU MLP) or ``"moe"`` (``MoELayer.from_config(moe, d_model)``).
        moe: the MoE FFN's config; :func:`unimoe_config` when None and ``ffn="moe"``.
        dense_hidden: hidden width of the dense FFN.
        max_len: longest sequence (1 + text + audio frames) the position embedding covers.
    """

    def __init__(self, vocab: int = VOCAB, codebooks: int = NUM_CODEBOOKS, text_vocab: int = 128, num_tasks: int = 4,
                 d_model: int = 256, layers: int = 4, heads: int = 4, ffn: str = "dense", moe: MoEConfig | None = None,
                 dense_hidden: int = 1024, max_len: int = 1024) -> None:
        super().__init__()
        check_arg(ffn in ("dense", "moe"), "ffn", ffn, "'dense' or 'moe'")
        check_arg(d_model % heads == 0, "d_model", d_model, f"a multiple of heads={heads}")
        if ffn == "moe" and moe is None:
            moe = unimoe_config(d_hidden=d_model)
        self.vocab, self.codebooks, self.max_len, self.moe_config = vocab, codebooks, max_len, moe
        self.text_embed = nn.Embedding(text_vocab, d_model)
        self.task_embed = nn.Embedding(num_tasks, d_model)
        self.audio_embed = nn.Embedding(codebooks * vocab, d_model)
        self.pos_embed = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, heads, ffn, moe, dense_hidden) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, codebooks * vocab)
        self.register_buffer("offsets", torch.arange(codebooks) * vocab, persistent=False)

    def _embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """Sum of the Q codebook embeddings of each frame: ``[B, T, Q]`` → ``[B, T, D]``."""
        return self.audio_embed(audio + self.offsets).sum(-2)

    def _run(self, x: torch.Tensor, positions: torch.Tensor, key_valid: torch.Tensor | None,
             caches: list[list[torch.Tensor]] | None):
        """The blocks on ``x[B, T, D]`` at ``positions[B, T]``; ``key_valid[B, past + T]`` masks padded keys."""
        check_arg(int(positions.max()) < self.max_len, "sequence length", int(positions.max()) + 1,
                  f"<= max_len={self.max_len}")
        x = x + self.pos_embed(positions)
        aux: dict[str, torch.Tensor] = {}
        stats: dict[str, ExpertStats] = {}
        extras: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x, out = block(x, caches[i] if caches is not None else None, key_valid)
            if out is not None:
                aux.update({f"block{i}/{k}": v for k, v in out.aux.items()})
                stats[f"block{i}"] = out.stats
                extras[f"block{i}/null_rate"] = null_rate(out.routing.ids, self.moe_config.num_experts,
                                                          self.moe_config.num_null)
        return self.norm(x), aux, stats, extras

    def _prefix(self, text_ids: torch.Tensor, task: torch.Tensor | int,
                text_lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embedded ``[task, text]`` prefix, its key mask ``[B, 1 + L]`` and its positions ``[B, 1 + L]`` (padded
        characters take no position, so a row's numbers do not depend on the batch's longest text)."""
        check_arg(text_ids.dim() == 2, "text_ids.shape", tuple(text_ids.shape), "[B, L]")
        B, L = text_ids.shape
        if text_lengths is None:
            text_lengths = torch.full((B,), L, device=text_ids.device)
        check_arg(tuple(text_lengths.shape) == (B,), "text_lengths.shape", tuple(text_lengths.shape), f"[{B}]")
        task = torch.as_tensor(task, device=text_ids.device).expand(B)
        valid = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=text_ids.device),
                           torch.arange(L, device=text_ids.device) < text_lengths[:, None]], 1)
        positions = valid.long().cumsum(1) - 1
        return torch.cat([self.task_embed(task)[:, None], self.text_embed(text_ids)], 1), valid, positions

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h).unflatten(-1, (self.codebooks, self.vocab))

    def forward(self, text_ids: torch.Tensor, task: torch.Tensor | int, audio: torch.Tensor,
                text_lengths: torch.Tensor | None = None) -> ModelOutput:
        """Next-frame logits for every audio input frame.

        Args:
            text_ids: ``[B, L]`` character ids of the prefix, right-padded.
            task: task id, an int or ``[B]``.
            audio: ``[B, T, Q]`` delayed tokens, starting with an all-BOS frame (right-padded with PAD).
            text_lengths: ``[B]`` characters of each row (padding is masked out); all ``L`` when None.

        Returns:
            :class:`ModelOutput` with ``pred[B, T, Q, vocab]`` (``pred[:, t]`` predicts ``audio[:, t + 1]``, the
            last one the frame after the input), the MoE layers' aux losses and ``ExpertStats`` keyed ``block{i}``,
            and ``extras["block{i}/null_rate"]``.
        """
        check_arg(audio.dim() == 3 and audio.shape[-1] == self.codebooks, "audio.shape", tuple(audio.shape),
                  f"[B, T, {self.codebooks}]")
        prefix, valid, positions = self._prefix(text_ids, task, text_lengths)
        T = audio.shape[1]
        positions = torch.cat([positions, valid.sum(1, keepdim=True) + torch.arange(T, device=audio.device)], 1)
        key_valid = None if bool(valid.all()) else torch.cat([valid, valid.new_ones(valid.shape[0], T)], 1)
        h, aux, stats, extras = self._run(torch.cat([prefix, self._embed_audio(audio)], 1), positions, key_valid, None)
        return ModelOutput(self._logits(h[:, prefix.shape[1]:]), aux, stats, extras)

    @torch.no_grad()
    def generate(self, text_ids: torch.Tensor, task: torch.Tensor | int, max_frames: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int = 0, use_cache: bool = True,
                 return_logits: bool = False, text_lengths: torch.Tensor | None = None) -> Generation:
        """Sample delayed frames one at a time.

        Only codes are sampled (and EOS on codebook 0). Codebook ``q`` is forced to BOS for its first ``q`` steps; once codebook 0 samples EOS at step ``e``,
        codebook 0 is PAD afterwards and codebook ``q`` is forced to EOS at ``e + q`` and PAD after it, and the row
        is finished at ``e + Q − 1``. Sampling stops when every row is finished or after ``max_frames`` frames.

        Args:
            text_ids: ``[B, L]`` prefix character ids.
            task: task id, an int or ``[B]``.
            max_frames: most frames to sample.
            temperature: softmax temperature (> 0).
            top_k: sample among the k most likely ids of each codebook; all when None.
            seed: seed of the sampling generator.
            use_cache: reuse per-layer keys/values (True) or recompute the whole sequence each step (False).
            return_logits: also return the (untempered) logits each frame was sampled from.
            text_lengths: ``[B]`` characters of each row of a right-padded ``text_ids``; all when None.
        """
        check_arg(max_frames >= 1, "max_frames", max_frames, "an int >= 1")
        check_arg(temperature > 0, "temperature", temperature, "> 0")
        check_arg(top_k is None or 1 <= top_k <= self.vocab, "top_k", top_k, f"None or an int in [1, {self.vocab}]")
        B, Q, device = text_ids.shape[0], self.codebooks, text_ids.device
        gen = torch.Generator(device=device).manual_seed(seed)
        prefix, valid, positions = self._prefix(text_ids, task, text_lengths)
        audio_start = valid.sum(1, keepdim=True)  # position of the BOS frame
        frames = torch.full((B, 1, Q), BOS, dtype=torch.long, device=device)
        # Only codes may be sampled, and EOS on codebook 0 only: the delay pattern forces every other special id.
        banned = torch.zeros(Q, self.vocab, dtype=torch.bool, device=device)
        banned[:, PAD] = banned[:, BOS] = True
        banned[1:, EOS] = True

        def whole(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
            T = frames.shape[1]
            pos = torch.cat([positions, audio_start + torch.arange(T, device=device)], 1)
            keys = None if bool(valid.all()) else torch.cat([valid, valid.new_ones(B, T)], 1)
            return torch.cat([prefix, self._embed_audio(frames)], 1), pos, keys

        caches = [[] for _ in self.blocks] if use_cache else None
        if use_cache:
            h = self._run(*whole(frames), caches)[0]
        eos_at = torch.full((B,), -1, dtype=torch.long, device=device)
        q_idx = torch.arange(Q, device=device)
        all_logits = []
        for step in range(max_frames):
            if not use_cache:
                h = self._run(*whole(frames), None)[0]
            logits = self._logits(h[:, -1])  # [B, Q, V]
            scaled = (logits / temperature).masked_fill(banned, float("-inf"))
            if top_k is not None:
                kth = scaled.topk(top_k, -1).values[..., -1:]
                scaled = scaled.masked_fill(scaled < kth, float("-inf"))
            probs = scaled.softmax(-1).reshape(B * Q, -1)
            frame = torch.multinomial(probs, 1, generator=gen).view(B, Q)
            frame = torch.where(q_idx <= step, frame, torch.full_like(frame, BOS))  # delay: q waits q steps
            ended = eos_at >= 0
            since = step - eos_at[:, None]  # steps since codebook 0's EOS
            forced = torch.where(since == q_idx, EOS, PAD)
            frame = torch.where(ended[:, None] & (since >= q_idx), forced, frame)
            eos_at = torch.where(~ended & (frame[:, 0] == EOS), step, eos_at)
            frames = torch.cat([frames, frame[:, None]], 1)
            all_logits.append(logits)
            if bool(((eos_at >= 0) & (step - eos_at >= Q - 1)).all()):
                break
            if use_cache and step + 1 < max_frames:
                pos = audio_start + frames.shape[1] - 1
                keys = None if bool(valid.all()) else torch.cat([valid, valid.new_ones(B, frames.shape[1])], 1)
                h = self._run(self._embed_audio(frame[:, None]), pos, keys, caches)[0]
        return Generation(frames[:, 1:], torch.stack(all_logits, 1) if return_logits else None)
