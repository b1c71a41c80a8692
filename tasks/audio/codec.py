"""The audio task's local tokenizer, standing in for DAC/EnCodec whose weights are not available offline: a 16 kHz
waveform becomes an 80-bin log-mel at 50 frames/s, each frame is quantised by a residual k-means VQ (4 codebooks
of 256 fitted on local audio, each stage on the previous stage's residual), and the codebooks are interleaved with
the delay pattern [0, 1, 2, 3] for the decoder. Tokens go back to a waveform through the VQ, an inverse mel filter
bank (least squares) and Griffin-Lim, so they can be listened to; Griffin-Lim invents the phase, so the quality is
measured on the log-mel (``mel_distance``, ``mel_snr``) as well as on the waveform (``reconstruction_snr``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from zoo.errors import ZooValueError, check_arg, check_seed

SAMPLE_RATE, N_FFT, HOP, N_MELS = 16_000, 1024, 320, 80
LOG_FLOOR = 1e-5  # mel magnitudes are clamped here before the natural log: log-mels are >= ln(1e-5) ≈ -11.51 (-100 dB)
NUM_CODEBOOKS, CODEBOOK_SIZE = 4, 256
EOS, PAD, BOS = CODEBOOK_SIZE, CODEBOOK_SIZE + 1, CODEBOOK_SIZE + 2  # special ids after the 256 codes of a codebook
VOCAB = CODEBOOK_SIZE + 3  # ids per codebook: 256 codes + EOS, PAD, BOS
_DB_PER_NEPER = 20.0 / math.log(10.0)  # a log-mel difference of 1 (natural log of a magnitude) is 8.69 dB
_CHUNK = 1 << 15  # rows of one distance block, so the [rows, K] distance matrix stays small


def _as_tensor(wave: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """A float32 tensor from a numpy array or tensor of shape ``[T]`` or ``[B, T]``."""
    x = torch.as_tensor(wave)
    check_arg(x.dim() in (1, 2) and x.shape[-1] > 0, f"{name}.shape", tuple(x.shape), "[T] or [B, T] with T > 0")
    check_arg(x.is_floating_point(), f"{name}.dtype", x.dtype, "a floating dtype")
    return x.float()


class MelSpec:
    """Log-mel analysis (80 HTK mel bins over 0–8 kHz, n_fft 1024, hop 320, Hann window, centred frames, magnitude
    mel clamped at :data:`LOG_FLOOR` then natural log) and its approximate inverse (least-squares inverse mel
    filter bank, then Griffin-Lim). A waveform of ``T`` samples gives ``T // 320 + 1`` frames.

    Args:
        gl_iters: Griffin-Lim iterations of :meth:`inverse`.
    """

    def __init__(self, gl_iters: int = 32) -> None:
        import torchaudio.transforms as T

        check_arg(isinstance(gl_iters, int) and gl_iters >= 1, "gl_iters", gl_iters, "an int >= 1")
        self.gl_iters = gl_iters
        self._mel = T.MelSpectrogram(SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, power=1.0)
        self._inv_mel = T.InverseMelScale(N_FFT // 2 + 1, n_mels=N_MELS, sample_rate=SAMPLE_RATE)
        self._gl = T.GriffinLim(n_fft=N_FFT, hop_length=HOP, power=1.0, n_iter=gl_iters, rand_init=False)

    def __call__(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Log-mel of a waveform.

        Args:
            wave: ``[T]`` or ``[B, T]`` samples at 16 kHz (numpy or torch).

        Returns:
            ``[frames, 80]`` or ``[B, frames, 80]`` float32 log-mel, on the waveform's device.
        """
        x = _as_tensor(wave, "wave")
        mel = self._mel.to(x.device)(x)
        return mel.clamp_min(LOG_FLOOR).log().transpose(-1, -2).contiguous()

    def inverse(self, logmel: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Waveform whose log-mel approximates ``logmel`` (deterministic: Griffin-Lim starts from zero phase).

        Args:
            logmel: ``[frames, 80]`` or ``[B, frames, 80]``.
            length: samples of the result; ``(frames - 1) * 320`` when None.

        Returns:
            ``[T]`` or ``[B, T]`` float32 waveform clipped to [-1, 1].
        """
        check_arg(logmel.dim() in (2, 3) and logmel.shape[-1] == N_MELS, "logmel.shape", tuple(logmel.shape),
                  f"[frames, {N_MELS}] or [B, frames, {N_MELS}]")
        mel = logmel.float().exp().transpose(-1, -2)
        spec = self._inv_mel.to(mel.device)(mel)
        self._gl.length = length if length is not None else (logmel.shape[-2] - 1) * HOP
        return self._gl.to(mel.device)(spec).clamp(-1.0, 1.0)


def _assign(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row of ``x`` ``[N, D]`` and its squared distance, in blocks of rows."""
    idx, dist = [], []
    for block in x.split(_CHUNK):
        d, i = torch.cdist(block, centroids).min(1)
        idx.append(i)
        dist.append(d.square())
    return torch.cat(idx), torch.cat(dist)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding: the first centroid uniformly; for each next one, ``2 + ⌊ln k⌋`` candidates drawn
    with probability proportional to the squared distance to the nearest centroid so far (uniformly once every point
    coincides with a centroid), keeping the candidate that lowers the total squared distance most.

    Args:
        x: ``[N, D]`` points.
        k: number of centroids.
        generator: random source (on ``x``'s device).

    Returns:
        ``[k, D]`` centroids, rows of ``x``.
    """
    trials = 2 + int(math.log(k))
    first = torch.randint(x.shape[0], (1,), generator=generator, device=x.device)
    centroids = x.new_empty(k, x.shape[1])
    centroids[0] = x[first[0]]
    d2 = (x - centroids[0]).square().sum(1)
    for j in range(1, k):
        weights = d2 if bool(d2.sum() > 0) else torch.ones_like(d2)
        picks = torch.multinomial(weights, trials, replacement=True, generator=generator)
        cand = torch.minimum(d2[:, None], torch.cdist(x, x[picks]).square())  # [N, trials]
        best = cand.sum(0).argmin()
        centroids[j] = x[picks[best]]
        d2 = cand[:, best]
    return centroids


def lloyd(x: torch.Tensor, centroids: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd iterations from ``centroids``, stopping early once no assignment changes. A cluster left empty by a
    step is re-seeded at the points farthest from their own centroid (the e empty clusters take the e largest
    squared distances, largest first), so it splits the worst-fitted region at the next step.

    Args:
        x: ``[N, D]`` points.
        centroids: ``[K, D]`` starting centroids (not modified).
        iters: at most this many update steps.

    Returns:
        ``([K, D]`` centroids, ``[N]`` long assignment of each point under them).
    """
    c = centroids.clone()
    k = c.shape[0]
    prev = None
    for _ in range(iters):
        idx, d2 = _assign(x, c)
        if prev is not None and torch.equal(idx, prev):
            return c, idx
        prev = idx
        counts = torch.bincount(idx, minlength=k)
        sums = torch.zeros_like(c).index_add_(0, idx, x)
        full = counts > 0
        c[full] = sums[full] / counts[full, None].to(x.dtype)
        empty = (~full).nonzero().squeeze(1)
        if empty.numel():
            take = min(empty.numel(), x.shape[0])
            c[empty[:take]] = x[d2.topk(take).indices]
    return c, _assign(x, c)[0]


def kmeans(x: torch.Tensor, k: int, seed: int, iters: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding then :func:`lloyd`.

    Args:
        x: ``[N, D]`` float points.
        k: number of clusters.
        seed: seeds the k-means++ draws; same seed, same data and device give the same result.
        iters: at most this many Lloyd steps.

    Returns:
        ``([k, D]`` centroids, ``[N]`` long assignments).
    """
    check_seed(seed)
    check_arg(isinstance(k, int) and k >= 1, "k", k, "an int >= 1")
    check_arg(isinstance(iters, int) and iters >= 0, "iters", iters, "an int >= 0")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return lloyd(x, kmeans_plus_plus(x, k, gen), iters)


class ResidualVQ(nn.Module):
    """Residual vector quantiser: stage q quantises what stages 0..q-1 left over, so a frame is the sum of one
    centroid per codebook. The codebooks are a buffer (``codebooks`` ``[Q, K, D]``, plus the ``fitted`` flag), so
    the quantiser ships in a state dict / safetensors file with the model.

    Args:
        num_codebooks: stages ``Q``.
        size: centroids per codebook ``K``.
        dim: frame size ``D`` (80 log-mel bins).
    """

    def __init__(self, num_codebooks: int = NUM_CODEBOOKS, size: int = CODEBOOK_SIZE, dim: int = N_MELS) -> None:
        super().__init__()
        for name, value in (("num_codebooks", num_codebooks), ("size", size), ("dim", dim)):
            check_arg(isinstance(value, int) and value >= 1, name, value, "an int >= 1")
        self.register_buffer("codebooks", torch.zeros(num_codebooks, size, dim))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def num_codebooks(self) -> int:
        return self.codebooks.shape[0]

    def _check_frames(self, frames: torch.Tensor) -> None:
        check_arg(frames.dim() >= 2 and frames.shape[-1] == self.codebooks.shape[-1] and frames.is_floating_point(),
                  "frames", f"{tuple(frames.shape)} {frames.dtype}", f"float [..., {self.codebooks.shape[-1]}]")

    def _check_fitted(self) -> None:
        if not bool(self.fitted):
            raise ZooValueError("ResidualVQ is not fitted: call fit(frames, seed) or load a state dict first")

    @torch.no_grad()
    def fit(self, frames: torch.Tensor, seed: int, iters: int = 25) -> ResidualVQ:
        """Fit every codebook by k-means (k-means++ seeding, Lloyd steps) on the residual of the stages before.

        Args:
            frames: ``[N, D]`` training frames (log-mels), N >= 1.
            seed: stage q uses ``seed + q``.
            iters: at most this many Lloyd steps per stage.

        Returns:
            ``self``, fitted, codebooks on ``frames``' device.
        """
        self._check_frames(frames)
        check_arg(frames.dim() == 2 and frames.shape[0] >= 1, "frames.shape", tuple(frames.shape), "[N >= 1, D]")
        check_seed(seed)
        residual = frames.float().to(self.codebooks.device)
        for q in range(self.num_codebooks):
            c, idx = kmeans(residual, self.codebooks.shape[1], seed + q, iters)
            self.codebooks[q] = c
            residual = residual - c[idx]
        self.fitted.fill_(True)
        return self

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, num_codebooks: int | None = None) -> torch.Tensor:
        """Codes of ``frames``.

        Args:
            frames: ``[..., D]``.
            num_codebooks: use only the first this many stages (all when None).

        Returns:
            ``[..., Q']`` long codes in ``[0, K)``.
        """
        self._check_fitted()
        self._check_frames(frames)
        n = self.num_codebooks if num_codebooks is None else num_codebooks
        check_arg(isinstance(n, int) and 1 <= n <= self.num_codebooks, "num_codebooks", n,
                  f"an int in [1, {self.num_codebooks}]")
        residual = frames.reshape(-1, frames.shape[-1]).float().to(self.codebooks.device)
        codes = []
        for q in range(n):
            idx = _assign(residual, self.codebooks[q])[0]
            residual = residual - self.codebooks[q, idx]
            codes.append(idx)
        return torch.stack(codes, 1).reshape(*frames.shape[:-1], n)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Frames from codes: the sum over stages of the chosen centroids.

        Args:
            codes: ``[..., Q']`` integer codes of the first ``Q' <= Q`` stages, each in ``[0, K)``.

        Returns:
            ``[..., D]`` float32 frames.
        """
        self._check_fitted()
        q = codes.shape[-1] if codes.dim() else 0
        check_arg(not codes.is_floating_point() and 1 <= q <= self.num_codebooks, "codes",
                  f"{tuple(codes.shape)} {codes.dtype}", f"integer [..., Q'] with 1 <= Q' <= {self.num_codebooks}")
        k = self.codebooks.shape[1]
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= k):
            raise ZooValueError(f"codes must lie in [0, {k}); got values in [{int(codes.min())}, {int(codes.max())}]"
                                " (strip BOS/PAD/EOS and undelay first)")
        codes = codes.to(self.codebooks.device).long()
        return self.codebooks[torch.arange(q, device=codes.device), codes].sum(-2)


def _delays(q: int, delays: Sequence[int] | None) -> list[int]:
    out = list(range(q)) if delays is None else [int(d) for d in delays]
    check_arg(len(out) == q and all(d >= 0 for d in out), "delays", delays, f"{q} non-negative ints")
    return out


def delay(codes: torch.Tensor, pad: int = PAD, bos: int = BOS, delays: Sequence[int] | None = None) -> torch.Tensor:
    """Apply the delay pattern: codebook q moves ``delays[q]`` steps later (``q`` by default, i.e. [0, 1, 2, 3]);
    positions before a codebook's first code hold ``bos``, those after its last code hold ``pad``.

    Args:
        codes: ``[..., T, Q]`` integer codes.
        pad: id after a codebook's codes (:data:`PAD` = 257).
        bos: id before a codebook's codes (:data:`BOS` = 258).
        delays: per-codebook delays, ``range(Q)`` when None.

    Returns:
        ``[..., T + max(delays), Q]``, the dtype of ``codes``.
    """
    check_arg(codes.dim() >= 2 and codes.shape[-2] >= 1 and not codes.is_floating_point(), "codes",
              f"{tuple(codes.shape)} {codes.dtype}", "integer [..., T, Q] with T >= 1")
    t, q = codes.shape[-2:]
    d = torch.tensor(_delays(q, delays), device=codes.device)
    src = torch.arange(t + int(d.max()), device=codes.device)[:, None] - d  # [T', Q]: source step of each slot
    gathered = codes.gather(-2, src.clamp(0, t - 1).expand(*codes.shape[:-2], -1, -1))
    out = torch.where(src < 0, bos, torch.where(src >= t, pad, gathered))
    return out.to(codes.dtype)


def undelay(codes: torch.Tensor, delays: Sequence[int] | None = None) -> torch.Tensor:
    """Inverse of :func:`delay`: ``undelay(delay(c)) == c`` for any ``T`` (BOS/PAD ids are dropped).

    Args:
        codes: ``[..., T', Q]`` delayed codes with ``T' >= max(delays)``.
        delays: per-codebook delays, ``range(Q)`` when None.

    Returns:
        ``[..., T' - max(delays), Q]``.
    """
    check_arg(codes.dim() >= 2, "codes.shape", tuple(codes.shape), "[..., T', Q]")
    tp, q = codes.shape[-2:]
    d = torch.tensor(_delays(q, delays), device=codes.device)
    t = tp - int(d.max())
    check_arg(t >= 0, "codes.shape", tuple(codes.shape), f"at least {int(d.max())} steps")
    src = torch.arange(t, device=codes.device)[:, None] + d
    return codes.gather(-2, src.expand(*codes.shape[:-2], -1, -1))


class Codec(nn.Module):
    """Waveform <-> codec tokens: :class:`MelSpec` then :class:`ResidualVQ`. Only the quantiser has state
    (``vq.codebooks``, ``vq.fitted``); the mel analysis is fixed.

    Args:
        num_codebooks: VQ stages.
        size: centroids per codebook.
        gl_iters: Griffin-Lim iterations when decoding to a waveform.
    """

    def __init__(self, num_codebooks: int = NUM_CODEBOOKS, size: int = CODEBOOK_SIZE, gl_iters: int = 32) -> None:
        super().__init__()
        self.mel = MelSpec(gl_iters)
        self.vq = ResidualVQ(num_codebooks, size, N_MELS)

    def fit(self, waves: Sequence[np.ndarray | torch.Tensor], seed: int, iters: int = 25) -> Codec:
        """Fit the quantiser on the log-mel frames of ``waves`` (1-D waveforms at 16 kHz)."""
        check_arg(len(waves) > 0, "waves", "[]", "at least one waveform")
        self.vq.fit(torch.cat([self.mel(w).reshape(-1, N_MELS) for w in waves]), seed, iters)
        return self

    def tokens(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Codes of a waveform, before the delay pattern (apply :func:`delay` for the decoder).

        Args:
            wave: ``[T]`` or ``[B, T]`` samples at 16 kHz.

        Returns:
            ``[T // 320 + 1, Q]`` or ``[B, T // 320 + 1, Q]`` long codes in ``[0, 256)``.
        """
        return self.vq.encode(self.mel(wave).to(self.vq.codebooks.device))

    def waveform(self, tokens: torch.Tensor, length: int | None = None) -> np.ndarray:
        """Waveform from codes (undelayed, no special ids), through the VQ and Griffin-Lim.

        Args:
            tokens: ``[frames, Q']`` or ``[B, frames, Q']`` codes of the first ``Q'`` codebooks.
            length: samples of the result; ``(frames - 1) * 320`` when None.

        Returns:
            ``[T]`` or ``[B, T]`` float32 numpy waveform in [-1, 1].
        """
        return self.mel.inverse(self.vq.decode(tokens), length).cpu().numpy()


def reconstruction_snr(wave: np.ndarray | torch.Tensor, wave_hat: np.ndarray | torch.Tensor) -> float:
    """Waveform SNR in dB, ``10 log10(Σ x² / Σ (x − x̂)²)`` over the common length. Griffin-Lim does not recover
    the phase, so this is near or below 0 dB even for a good-sounding result; read :func:`mel_distance` too.
    """
    x, y = _as_tensor(wave, "wave").double(), _as_tensor(wave_hat, "wave_hat").double()
    n = min(x.shape[-1], y.shape[-1])
    x, y = x[..., :n], y[..., :n]
    return float(10 * torch.log10(x.square().sum() / (x - y).square().sum().clamp_min(1e-30)))


def mel_distance(logmel: torch.Tensor, logmel_hat: torch.Tensor, top_db: float | None = 80.0) -> float:
    """Root-mean-square log-mel difference in dB (``20 log10`` of the magnitude ratio) over the common frames.

    Args:
        logmel: ``[..., frames, 80]`` reference log-mel.
        logmel_hat: ``[..., frames', 80]`` log-mel to compare.
        top_db: both are first raised to ``top_db`` below the reference's peak, so near-silent bins (down to the
            -100 dB floor) do not dominate; None compares the raw values.
    """
    n = min(logmel.shape[-2], logmel_hat.shape[-2])
    a, b = logmel[..., :n, :].double(), logmel_hat[..., :n, :].double()
    if top_db is not None:
        low = a.max() - top_db / _DB_PER_NEPER
        a, b = a.clamp_min(low), b.clamp_min(low)
    return float(((a - b) * _DB_PER_NEPER).square().mean().sqrt())


def mel_snr(logmel: torch.Tensor, logmel_hat: torch.Tensor) -> float:
    """SNR in dB of the mel magnitudes (``exp`` of the log-mels) over the common frames."""
    n = min(logmel.shape[-2], logmel_hat.shape[-2])
    m, mh = logmel[..., :n, :].double().exp(), logmel_hat[..., :n, :].double().exp()
    return float(10 * torch.log10(m.square().sum() / (m - mh).square().sum().clamp_min(1e-30)))
