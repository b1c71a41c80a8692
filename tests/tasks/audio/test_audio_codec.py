"""The local audio tokenizer: k-means against a plain loop and scikit-learn, the residual VQ, the delay pattern,
the mel round trip and the codec's shapes and state."""

import numpy as np
import pytest
import torch

from zoo.errors import ZooValueError
from zoo.tasks.audio.codec import (
    BOS,
    HOP,
    N_MELS,
    PAD,
    Codec,
    MelSpec,
    ResidualVQ,
    delay,
    kmeans,
    lloyd,
    mel_distance,
    mel_snr,
    reconstruction_snr,
    undelay,
)

SR = 16_000


def _signals(seed: int, n: int = 6, seconds: float = 1.0) -> list[np.ndarray]:
    """Chirps, harmonic tones and noise bursts at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    out = []
    for i in range(n):
        if i % 3 == 0:
            f0, f1 = rng.uniform(100, 500), rng.uniform(1000, 6000)
            x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
        elif i % 3 == 1:
            f0 = rng.uniform(100, 400)
            x = sum(np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.3)) / h for h in range(1, 6))
        else:
            x = rng.standard_normal(t.size) * (np.sin(2 * np.pi * rng.uniform(2, 6) * t) > 0.3)
        out.append((0.5 * x / np.abs(x).max()).astype(np.float32))
    return out


def _blobs(seed: int, n: int, k: int, dim: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * 4
    return centres[torch.randint(k, (n,), generator=g)] + torch.randn(n, dim, generator=g)


def test_lloyd_step_matches_plain_loop():
    x = _blobs(0, 200, 5, 3)
    init = x[:5].clone()
    c, idx = lloyd(x, init, iters=1)
    sums, counts, assign = torch.zeros(5, 3, dtype=torch.float64), [0] * 5, []
    for point in x.double():
        j = min(range(5), key=lambda i: float(((point - init[i].double()) ** 2).sum()))
        sums[j] += point
        counts[j] += 1
        assign.append(j)
    expected = sums / torch.tensor(counts, dtype=torch.float64)[:, None]
    torch.testing.assert_close(c.double(), expected, rtol=1e-5, atol=1e-5)
    # the returned assignment is under the updated centroids
    assert torch.equal(idx, torch.cdist(x, c).argmin(1))


def test_kmeans_inertia_close_to_sklearn():
    sk = pytest.importorskip("sklearn.cluster")
    for seed in range(3):
        x = _blobs(seed, 600, 8, 6)
        c, idx = kmeans(x, 8, seed=0, iters=50)
        ours = float((x - c[idx]).square().sum())
        ref = sk.KMeans(8, n_init=4, random_state=0).fit(x.numpy()).inertia_
        assert ours <= 1.02 * ref


def test_residual_vq_error_decreases_with_codebooks():
    mel = MelSpec()
    frames = torch.cat([mel(w) for w in _signals(0)])
    vq = ResidualVQ(4, 32, N_MELS).fit(frames, seed=0, iters=15)
    errors = [float((vq.decode(vq.encode(frames, n)) - frames).square().mean()) for n in range(1, 5)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


def test_shapes_dtypes_and_state_dict_round_trip(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    waves = _signals(1, n=3)
    codec = Codec(num_codebooks=4, size=16, gl_iters=4).fit(waves, seed=0, iters=5)
    codes = codec.tokens(waves[0])
    assert codes.shape == (SR // HOP + 1, 4) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 16
    batch = codec.tokens(np.stack(waves[:2]))
    assert batch.shape == (2, SR // HOP + 1, 4) and torch.equal(batch[0], codes)
    frames = codec.vq.decode(codes[:, :2])
    assert frames.shape == (codes.shape[0], N_MELS) and frames.dtype == torch.float32
    assert codec.vq.encode(frames.double(), 2).shape == (codes.shape[0], 2)
    wave = codec.waveform(codes)
    assert isinstance(wave, np.ndarray) and wave.dtype == np.float32 and wave.shape == ((codes.shape[0] - 1) * HOP,)
    assert np.abs(wave).max() <= 1.0
    assert codec.waveform(codes, length=SR).shape == (SR,)

    safetensors.save_file(codec.state_dict(), tmp_path / "codec.safetensors")
    assert set(codec.state_dict()) == {"vq.codebooks", "vq.fitted"}
    loaded = Codec(num_codebooks=4, size=16)
    loaded.load_state_dict(safetensors.load_file(tmp_path / "codec.safetensors"))
    assert torch.equal(loaded.tokens(waves[0]), codes)


def test_unfitted_and_special_ids_are_refused():
    vq = ResidualVQ(2, 4, 3)
    with pytest.raises(ZooValueError, match="not fitted"):
        vq.encode(torch.zeros(5, 3))
    vq.fit(torch.randn(20, 3), seed=0)
    with pytest.raises(ZooValueError, match="undelay"):
        vq.decode(delay(torch.zeros(3, 2, dtype=torch.long)))
    with pytest.raises(ZooValueError, match="frames"):
        vq.encode(torch.zeros(5, 4))


def test_delay_hand_worked():
    codes = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    expected = torch.tensor([
        [1, BOS, BOS, BOS],
        [5, 2, BOS, BOS],
        [PAD, 6, 3, BOS],
        [PAD, PAD, 7, 4],
        [PAD, PAD, PAD, 8],
    ])
    assert torch.equal(delay(codes), expected)


@pytest.mark.parametrize("t", [1, 3, 7, 51])
@pytest.mark.parametrize("delays", [None, (0, 2, 3, 5)])
def test_delay_undelay_round_trip(t, delays):
    codes = torch.randint(256, (2, 3, t, 4))
    shifted = delay(codes, delays=delays)
    assert shifted.shape == (2, 3, t + (3 if delays is None else 5), 4)
    assert torch.equal(undelay(shifted, delays), codes)


def test_mel_round_trip_keeps_pitch():
    mel = MelSpec(gl_iters=32)
    t = np.arange(SR) / SR
    for f in (220.0, 440.0, 1000.0, 3000.0):
        x = (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)
        logmel = mel(x)
        y = mel.inverse(logmel, x.size)
        assert y.shape == (x.size,)
        assert int(mel(y).mean(0).argmax()) == int(logmel.mean(0).argmax())
        spectrum = np.abs(np.fft.rfft(y.numpy()))
        assert abs(spectrum.argmax() * SR / x.size - f) < 0.05 * f + 20
        assert mel_snr(logmel, mel(y)) > 12 and mel_distance(logmel, mel(y)) < 20
    assert reconstruction_snr(x, x) > 100


def test_fit_is_deterministic_with_seed():
    x = _blobs(2, 300, 6, 4)
    a = ResidualVQ(2, 8, 4).fit(x, seed=3, iters=10).codebooks
    b = ResidualVQ(2, 8, 4).fit(x, seed=3, iters=10).codebooks
    c = ResidualVQ(2, 8, 4).fit(x, seed=4, iters=10).codebooks
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_duplicate_points_give_empty_clusters_without_nan():
    distinct = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    x = distinct.repeat(30, 1)
    c, idx = kmeans(x, 16, seed=0, iters=10)
    assert torch.isfinite(c).all()
    assert float((x - c[idx]).square().sum()) < 1e-8
    assert idx.unique().numel() == 10
    vq = ResidualVQ(2, 16, 3).fit(x, seed=0)
    torch.testing.assert_close(vq.decode(vq.encode(x)), x, atol=1e-5, rtol=0)


def test_empty_cluster_is_reseeded_at_farthest_point():
    x = torch.tensor([[0.0], [0.1], [0.3], [5.0]])
    init = torch.tensor([[0.1], [5.0], [100.0]])  # the third centroid captures no point
    c, _ = lloyd(x, init, iters=1)
    # 0.3 is the point farthest from its centroid at the assignment: it seeds the empty cluster
    torch.testing.assert_close(c, torch.tensor([[0.4 / 3], [5.0], [0.3]]))
    c, idx = lloyd(x, init, iters=10)
    assert idx.unique().numel() == 3
