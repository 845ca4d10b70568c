"""LPIPS against a module-based transcription of ``lpips.LPIPS(net='alex', spatial=True)`` on random weights
saved in the official file formats, and FVD with a tiny TorchScript detector that has the I3D call signature."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from evaluation.metrics.fvd import I3D_FILE, frechet_distance, fvd, load_i3d, preprocess_videos
from evaluation.metrics.lpips import BACKBONE_FILE, LINEAR_FILE, LPIPSAlex, lpips
from worldmodels.errors import CheckpointError, DataError, FrameError, MissingFileError, UnsafePickleError

# torch 2.13 marks TorchScript deprecated; the official I3D detector is a TorchScript archive
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

CHANNELS = [64, 192, 384, 256, 256]


def torchvision_alexnet_features() -> nn.Sequential:
    """torchvision.models.alexnet().features, written out layer by layer."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
    )  # fmt: skip


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    torch.manual_seed(0)
    features = torchvision_alexnet_features()
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.1.weight"] = torch.randn(8, 4)  # the real file also holds the classifier; it is ignored
    folder = tmp_path_factory.mktemp("lpips")
    torch.save(state, folder / BACKBONE_FILE)
    linear = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(CHANNELS)}
    torch.save(linear, folder / LINEAR_FILE)
    return folder / BACKBONE_FILE, folder / LINEAR_FILE, features, linear


def reference_lpips(frame0: torch.Tensor, frame1: torch.Tensor, features: nn.Sequential, linear: dict) -> float:
    """lpips.LPIPS(net='alex', spatial=True).forward(in0, in1).mean() for one pair of [1, 3, H, W] in [-1, 1]."""
    shift = torch.Tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.Tensor([0.458, 0.448, 0.450])[None, :, None, None]
    slices = [features[0:2], features[2:5], features[5:8], features[8:10], features[10:12]]
    lins = []
    for k, c in enumerate(CHANNELS):
        lin = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, stride=1, padding=0, bias=False)).eval()
        lin[1].weight.data.copy_(linear[f"lin{k}.model.1.weight"])
        lins.append(lin)

    def run(x):
        outs, h = [], (x - shift) / scale
        for s in slices:
            h = s(h)
            outs.append(h)
        return outs

    def normalize(x, eps=1e-10):
        return x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + eps)

    with torch.no_grad():
        outs0, outs1 = run(frame0), run(frame1)
        res = [
            nn.Upsample(size=tuple(frame0.shape[2:]), mode="bilinear", align_corners=False)(
                lins[k](((normalize(outs0[k]) - normalize(outs1[k])) ** 2))
            )
            for k in range(5)
        ]
        val = res[0]
        for r in res[1:]:
            val += r
    return val.mean().item()


def test_lpips_matches_reference(lpips_files):
    backbone, linear_path, features, linear = lpips_files
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(2, 3, 67, 83, 3), dtype=np.uint8)
    b = np.clip(a.astype(np.int64) + rng.integers(-60, 61, size=a.shape), 0, 255).astype(np.uint8)
    ours = lpips(a, b, backbone_path=backbone, linear_path=linear_path, chunk_frames=4)
    features.eval()
    va = torch.tensor(np.transpose(a, (0, 1, 4, 2, 3)), dtype=torch.float32) / 255.0 * 2 - 1
    vb = torch.tensor(np.transpose(b, (0, 1, 4, 2, 3)), dtype=torch.float32) / 255.0 * 2 - 1
    ref = np.array(
        [[reference_lpips(va[n, t][None], vb[n, t][None], features, linear) for t in range(3)] for n in range(2)]
    )
    assert ref.min() > 0
    np.testing.assert_allclose(ours["per_frame"], ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours["per_step"], ref.mean(axis=0), rtol=1e-5)
    assert ours["mean"] == pytest.approx(ref.mean(), rel=1e-5)
    assert lpips(a, a, backbone_path=backbone, linear_path=linear_path)["mean"] == 0.0


class Opaque:
    """Pickled as a reference to this class, which weights_only loading refuses."""


def test_lpips_file_errors(lpips_files, tmp_path):
    backbone, linear_path, _, linear = lpips_files
    frames = np.zeros((1, 1, 64, 64, 3), dtype=np.uint8)
    with pytest.raises(MissingFileError, match=BACKBONE_FILE + ".*download.pytorch.org"):
        lpips(frames, frames, backbone_path=tmp_path / BACKBONE_FILE, linear_path=linear_path)
    with pytest.raises(MissingFileError, match=LINEAR_FILE + ".*lpips"):
        lpips(frames, frames, backbone_path=backbone, linear_path=tmp_path / LINEAR_FILE)
    torch.save({k: v for k, v in linear.items() if k != "lin3.model.1.weight"}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="lin3.model.1.weight"):
        LPIPSAlex.from_files(backbone, tmp_path / "partial.pth")
    torch.save(linear | {"lin0.model.1.weight": torch.zeros(1, 32, 1, 1)}, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"\(1, 64, 1, 1\)"):
        LPIPSAlex.from_files(backbone, tmp_path / "shape.pth")
    torch.save({"lin0.model.1.weight": Opaque()}, tmp_path / "code.pth")
    with pytest.raises(UnsafePickleError, match=r"references the global [\w.]*Opaque") as refused:
        LPIPSAlex.from_files(backbone, tmp_path / "code.pth")
    assert "weights_only" not in str(refused.value)  # never torch's advice to load it unsafely


# ---------------------------------------------------------------------------------------------------------------
# FVD


FEATURES = 16  # the real I3D gives 400; sqrtm of 400x400 costs seconds and the pipeline does not depend on D


class TinyI3D(nn.Module):
    """Deterministic features with StyleGAN-V's detector signature; checks the call and the input layout."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("proj", torch.randn(9, FEATURES, generator=generator))

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        if rescale or resize or not return_features:
            raise RuntimeError("expected rescale=False, resize=False, return_features=True")
        if x.dim() != 5 or x.size(1) != 3 or x.size(3) != 224 or x.size(4) != 224:
            raise RuntimeError("expected [B, 3, T, 224, 224]")
        stats = torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4)), x[:, :, -1].mean(dim=(2, 3))], dim=1)
        return torch.tanh(stats @ self.proj)


@pytest.fixture(scope="module")
def detector_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("i3d") / I3D_FILE
    torch.jit.save(torch.jit.script(TinyI3D()), str(path))
    return path


def reference_frechet(f1: np.ndarray, f2: np.ndarray) -> float:
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.real(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root)))


def test_frechet_distance_closed_form_and_scipy():
    rng = np.random.default_rng(1)
    f1 = rng.normal(size=(400, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, 0.0]
    f2 = rng.normal(size=(300, 3)) * [1.5, 1.0, 0.5] + [0.5, 0.0, 0.0]
    # closed form for diagonal covariances: |mu1 - mu2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2))
    v1, v2 = np.diag(np.cov(f1, rowvar=False)), np.diag(np.cov(f2, rowvar=False))
    off_diagonal = max(
        np.abs(np.cov(f1, rowvar=False) - np.diag(v1)).max(), np.abs(np.cov(f2, rowvar=False) - np.diag(v2)).max()
    )
    closed = ((f1.mean(0) - f2.mean(0)) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert frechet_distance(f1, f2) == pytest.approx(closed, abs=20 * off_diagonal)
    assert frechet_distance(f1, f2) == pytest.approx(reference_frechet(f1, f2), rel=1e-12)
    assert frechet_distance(f1, f1) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(DataError, match="at least 2"):
        frechet_distance(f1[:1], f2)


def test_preprocessing_crop_and_scale():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, size=(2, 3, 224, 384, 3), dtype=np.uint8)
    out = preprocess_videos(torch.from_numpy(frames))
    assert out.shape == (2, 3, 3, 224, 224) and out.dtype == torch.float32
    # no resize at 224x384; centre crop = columns 80..303; [0, 1] -> [-1, 1]
    expected = (np.transpose(frames, (0, 4, 1, 2, 3))[..., 80:304].astype(np.float32) / np.float32(255) - 0.5) * 2
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-6)
    # 112x192 -> scale 2 -> 224x384 -> crop; a horizontal ramp u8 = column index stays linear:
    # output column j samples source x = (j + 0.5) / 2 - 0.5
    ramp = np.broadcast_to(np.arange(192, dtype=np.uint8)[None, None, None, :, None], (1, 2, 112, 192, 3)).copy()
    out = preprocess_videos(torch.from_numpy(ramp)).numpy()
    columns = np.arange(80, 304)
    expected_row = (((columns + 0.5) / 2 - 0.5) / 255 - 0.5) * 2
    np.testing.assert_allclose(out[0, 1, 1, 100], expected_row, rtol=0, atol=1e-6)
    assert out.shape == (1, 3, 2, 224, 224)
    # portrait 300x224: target (ceil(300 * 224 / 224), 224) = (300, 224); crop rows 38..261
    tall = rng.integers(0, 256, size=(1, 1, 300, 224, 3), dtype=np.uint8)
    out = preprocess_videos(torch.from_numpy(tall)).numpy()
    np.testing.assert_allclose(out[0, :, 0], (np.transpose(tall[0, 0, 38:262], (2, 0, 1)) / 255.0 - 0.5) * 2, atol=1e-6)


def test_fvd_prefixes_match_direct_computation(detector_path):
    rng = np.random.default_rng(3)
    gen = rng.integers(0, 256, size=(3, 11, 224, 384, 3), dtype=np.uint8)
    gt = np.clip(gen.astype(np.int64) + rng.integers(-80, 81, size=gen.shape), 0, 255).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3 samples of 16-d features give singular covariances
        out = fvd(gen, gt, detector_path=detector_path, batch_size=2, return_features=True)
        module = torch.jit.load(str(detector_path)).eval()

        def features(videos, length):
            crop = np.transpose(videos[:, :length, :, 80:304], (0, 4, 1, 2, 3)).astype(np.float32) / np.float32(255)
            x = torch.from_numpy((crop - np.float32(0.5)) * np.float32(2))
            return module(x, rescale=False, resize=False, return_features=True).double().numpy()

        expected = [reference_frechet(features(gen, t), features(gt, t)) for t in (10, 11)]
        assert out["prefix_lengths"] == [10, 11]
        assert out["value"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
        assert out["mean"] == pytest.approx(np.mean(expected), rel=1e-6)
        assert out["features_generated"].shape == (2, 3, FEATURES)
        np.testing.assert_allclose(out["features_generated"][0], features(gen, 10), rtol=1e-5, atol=1e-6)
        final = fvd(gen, gt, detector=load_i3d(detector_path), only_final=True, batch_size=2)
    assert final["prefix_lengths"] == [11] and final["value"] == pytest.approx(out["value"][1:], rel=1e-6)


def test_missing_scipy_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.linalg", None)  # makes `from scipy.linalg import sqrtm` fail
    with pytest.raises(ImportError, match=r"rlir\[metrics\]"):
        frechet_distance(np.zeros((3, 2)), np.ones((3, 2)))


def test_fvd_errors(detector_path, tmp_path):
    frames = np.zeros((2, 10, 224, 224, 3), dtype=np.uint8)
    with pytest.raises(MissingFileError, match=I3D_FILE + ".*dropbox"):
        fvd(frames, frames, detector_path=tmp_path / I3D_FILE)
    (tmp_path / "bad.pt").write_bytes(b"not a torchscript archive")
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_i3d(tmp_path / "bad.pt")
    with pytest.raises(FrameError, match="at least 10 frames"):
        fvd(frames[:, :9], frames[:, :9], detector_path=detector_path)
    with pytest.raises(DataError, match="at least 2 videos"):
        fvd(frames[:1], frames[:1], detector_path=detector_path)
