"""worldmodels.data.video: PyAV round trips, probing that survives lying containers, and every error path."""

from __future__ import annotations

import os
import types
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from worldmodels.data.video import CODECS, VideoInfo, iter_frames, probe_video, read_video, write_video
from worldmodels.errors import ConfigError, DataError, FrameError, MissingFileError


def random_frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def smooth_frames(t: int, h: int, w: int) -> np.ndarray:
    """Moving sinusoidal gradients: the kind of content lossy codecs are built for."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = [
        np.stack(
            [
                128 + 100 * np.sin((x + 5 * k) / 40),
                128 + 100 * np.cos(y / 30 + k / 5),
                128 + 80 * np.sin((x + y) / 50),
            ],
            axis=-1,
        )
        for k in range(t)
    ]
    return np.stack(frames).round().astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def write_faststart_then_truncate(path: Path, frames: np.ndarray, keep: float) -> None:
    """An mp4 whose header (moov first) claims every frame, with the tail of the media data cut off."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264rgb", rate=6, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --- round trips --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "suffix"), [("h264-lossless", ".mp4"), ("h264-lossless", ".mkv"), ("ffv1", ".mkv")])
def test_lossless_codecs_round_trip_bit_exactly(tmp_path: Path, codec: str, suffix: str) -> None:
    frames = random_frames(7, 48, 80, seed=1)  # noise: any loss at all would show
    path = tmp_path / f"clip{suffix}"
    assert write_video(path, frames, 6, codec=codec) == 7
    decoded = read_video(path)
    assert decoded.dtype == np.uint8 and decoded.shape == frames.shape
    np.testing.assert_array_equal(decoded, frames)


@pytest.mark.parametrize("codec", ["h264", "mp4v"])
def test_lossy_codecs_stay_within_psnr_bound(tmp_path: Path, codec: str) -> None:
    frames = smooth_frames(8, 224, 384)
    path = tmp_path / "clip.mp4"
    write_video(path, frames, 6, codec=codec)
    decoded = read_video(path, expected_frames=8, expected_size=(224, 384))
    assert psnr(decoded, frames) > 35.0
    assert not np.array_equal(decoded, frames)  # really lossy, so the bound above is doing work


def test_default_codec_is_h264_in_mp4(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, smooth_frames(3, 32, 48), 6)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.pix_fmt == "yuv420p"


def test_mp4v_writes_mpeg4_part2_like_opencv(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, smooth_frames(3, 32, 48), 6, codec="mp4v")
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"


def test_write_accepts_a_generator_of_frames(tmp_path: Path) -> None:
    frames = random_frames(5, 16, 24, seed=2)
    path = tmp_path / "gen.mkv"
    assert write_video(path, (f for f in frames), 20, codec="ffv1") == 5
    np.testing.assert_array_equal(read_video(path), frames)


# --- probing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fps", "expected"), [(6, 6.0), (20, 20.0), (Fraction(30000, 1001), 30000 / 1001)])
def test_probe_reports_count_size_and_fps(tmp_path: Path, fps: float | Fraction, expected: float) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, random_frames(9, 32, 64), fps, codec="h264-lossless")
    info = probe_video(path)
    assert isinstance(info, VideoInfo)
    assert (info.frames, info.width, info.height) == (9, 64, 32)
    assert info.fps == pytest.approx(expected, rel=1e-9)


def test_probe_counts_frames_when_the_container_stores_no_count(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    write_video(path, random_frames(11, 16, 16), 6, codec="ffv1")
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # Matroska keeps no frame count
    assert probe_video(path).frames == 11


def test_probe_does_not_trust_a_header_that_lies(tmp_path: Path) -> None:
    path = tmp_path / "cut.mp4"
    write_faststart_then_truncate(path, random_frames(16, 64, 96, seed=3), keep=0.6)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 16  # the header still claims every frame
    actual = sum(1 for _ in iter_frames(path))
    assert 0 < actual < 16
    assert probe_video(path).frames == actual


# --- streaming ----------------------------------------------------------------------------------------------------


def test_iter_frames_streams_one_rgb_frame_at_a_time(tmp_path: Path) -> None:
    frames = random_frames(6, 24, 40, seed=4)
    path = tmp_path / "clip.mp4"
    write_video(path, frames, 6, codec="h264-lossless")
    stream = iter_frames(path)
    assert isinstance(stream, types.GeneratorType)
    first = next(stream)
    assert first.shape == (24, 40, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, frames[0])  # RGB order, not BGR
    rest = list(stream)
    np.testing.assert_array_equal(np.stack([first, *rest]), frames)


def test_iter_frames_resizes_to_h_w(tmp_path: Path) -> None:
    colour = np.array([10, 200, 77], dtype=np.uint8)
    frames = np.broadcast_to(colour, (3, 64, 96, 3)).copy()
    path = tmp_path / "flat.mkv"
    write_video(path, frames, 6, codec="ffv1")
    resized = np.stack(list(iter_frames(path, size=(32, 48))))
    assert resized.shape == (3, 32, 48, 3)
    np.testing.assert_array_equal(resized, np.broadcast_to(colour, resized.shape))  # a flat colour survives resizing


def test_read_video_resize_applies_after_the_native_size_check(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, random_frames(2, 360, 640), 20, codec="h264-lossless")
    out = read_video(path, expected_size=(360, 640), size=(128, 128))
    assert out.shape == (2, 128, 128, 3)


# --- errors -------------------------------------------------------------------------------------------------------


def test_missing_file_raises_at_call_time(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    for call in (lambda: iter_frames(missing), lambda: read_video(missing), lambda: probe_video(missing)):
        with pytest.raises(MissingFileError, match="nope.mp4") as info:
            call()
        assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("content", [b"", b"definitely not a video" * 50])
def test_corrupt_file_raises_data_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken_clip.mp4"
    path.write_bytes(content)
    with pytest.raises(DataError, match="broken_clip.mp4"):
        read_video(path)
    with pytest.raises(DataError, match="broken_clip.mp4"):
        probe_video(path)


def test_truncated_video_names_file_and_both_counts(tmp_path: Path) -> None:
    path = tmp_path / "short_clip.mp4"
    write_video(path, random_frames(15, 32, 48), 6, codec="h264-lossless")
    with pytest.raises(DataError) as info:
        read_video(path, expected_frames=16)
    message = str(info.value)
    assert "short_clip.mp4" in message and "truncated" in message
    assert "decoded 15 frames" in message and "expected 16" in message


def test_cut_off_file_is_reported_truncated(tmp_path: Path) -> None:
    path = tmp_path / "cut.mp4"
    write_faststart_then_truncate(path, random_frames(16, 64, 96, seed=5), keep=0.6)
    actual = probe_video(path).frames
    with pytest.raises(DataError, match=rf"cut\.mp4: truncated video: decoded {actual} frames, expected 16"):
        read_video(path, expected_frames=16)


def test_too_many_frames_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "long.mp4"
    write_video(path, random_frames(5, 16, 16), 6, codec="h264-lossless")
    with pytest.raises(DataError, match=r"long\.mp4.*more than the expected 4 frames"):
        read_video(path, expected_frames=4)


def test_wrong_size_says_what_to_resize_to(tmp_path: Path) -> None:
    path = tmp_path / "big.mp4"
    write_video(path, random_frames(2, 360, 640), 20, codec="h264-lossless")
    with pytest.raises(DataError) as info:
        read_video(path, expected_size=(224, 384))
    message = str(info.value)
    assert "big.mp4" in message and "640x360 (W x H)" in message
    assert "resize to 384x224 (W x H) first" in message


def test_write_errors_leave_the_destination_untouched(tmp_path: Path) -> None:
    path = tmp_path / "keep.mp4"
    write_video(path, random_frames(2, 16, 16), 6, codec="h264-lossless")
    before = path.read_bytes()
    good = random_frames(3, 16, 16)
    cases = [
        (FrameError, "got no frames", lambda: write_video(path, [], 6)),
        (FrameError, r"frame 0 must be uint8\[H, W, 3\]", lambda: write_video(path, good.astype(np.float32), 6)),
        (FrameError, r"frame 0 must be uint8", lambda: write_video(path, good[..., 0], 6)),
        (FrameError, r"frame 2 has shape \(8, 16, 3\)", lambda: write_video(path, [good[0], good[1], good[2, :8]], 6)),
        (FrameError, r"even width and height, got 15x16", lambda: write_video(path, good[:, :, :15], 6)),
        (ConfigError, "unknown codec 'vp9'", lambda: write_video(path, good, 6, codec="vp9")),
        (ConfigError, "codec 'ffv1' cannot be written to a .mp4", lambda: write_video(path, good, 6, codec="ffv1")),
        (ConfigError, "fps must be a positive", lambda: write_video(path, good, 0)),
        (ConfigError, "fps must be a positive", lambda: write_video(path, good, float("nan"))),
    ]
    for error, pattern, call in cases:
        with pytest.raises(error, match=pattern):
            call()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.mp4"]  # no temporary files left behind


def test_odd_sizes_work_with_lossless_codecs(tmp_path: Path) -> None:
    frames = random_frames(2, 15, 17)
    path = tmp_path / "odd.mp4"
    write_video(path, frames, 6, codec="h264-lossless")
    np.testing.assert_array_equal(read_video(path), frames)


def test_write_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    write_video(path, random_frames(2, 16, 16, seed=7), 6, codec="ffv1")
    replacement = random_frames(4, 16, 16, seed=8)
    write_video(path, replacement, 6, codec="ffv1")
    np.testing.assert_array_equal(read_video(path), replacement)
    assert sorted(os.listdir(tmp_path)) == ["clip.mkv"]


def test_codec_table_lists_the_documented_names() -> None:
    assert set(CODECS) == {"h264", "mp4v", "h264-lossless", "ffv1"}
    assert {name for name, spec in CODECS.items() if spec.lossless} == {"h264-lossless", "ffv1"}
