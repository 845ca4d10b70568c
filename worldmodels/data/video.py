"""Video IO on PyAV: streaming RGB decode, reliable probing, atomic encode.

Frames are always ``uint8[H, W, 3]`` RGB (OpenCV-based reference code reads BGR and converts; PyAV hands us RGB
directly). Sizes are given as ``(H, W)`` like array shapes; error messages spell sizes ``W x H`` as video tools do.

Codecs for :func:`write_video` (pick by what the file is for):

===================  ======================  =========================================================
codec                container suffixes      use
===================  ======================  =========================================================
``"h264"``           .mp4 .mkv .mov          default: libx264, yuv420p, crf 18; small, plays everywhere
``"mp4v"``           .mp4 .mkv .mov .avi     MPEG-4 Part 2 as OpenCV's ``'mp4v'`` (MineWorld's output)
``"h264-lossless"``  .mp4 .mkv .mov          libx264rgb, rgb24, qp 0: bit-exact RGB round trip in .mp4
``"ffv1"``           .mkv .avi               FFV1 (bgr0): bit-exact, archival
===================  ======================  =========================================================

The two yuv420p codecs halve chroma resolution, so they need even width and height and are lossy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from worldmodels.errors import ConfigError, DataError, FrameError, MissingFileError
from worldmodels.runtime.files import atomic_output

__all__ = ["CODECS", "VideoInfo", "iter_frames", "probe_video", "read_video", "write_video"]


@dataclass(frozen=True)
class _Codec:
    encoder: str
    pix_fmt: str
    options: dict[str, str]
    suffixes: frozenset[str]
    lossless: bool
    qscale: int | None = None  # MPEG-4 Part 2 quality scale (2 = high, as ``ffmpeg -q:v 2``)

    @property
    def needs_even_size(self) -> bool:
        return self.pix_fmt == "yuv420p"


CODECS: dict[str, _Codec] = {
    "h264": _Codec("libx264", "yuv420p", {"crf": "18", "preset": "medium"}, frozenset({".mp4", ".mkv", ".mov"}), False),
    "mp4v": _Codec("mpeg4", "yuv420p", {}, frozenset({".mp4", ".mkv", ".mov", ".avi"}), False, qscale=2),
    "h264-lossless": _Codec(
        "libx264rgb", "rgb24", {"qp": "0", "preset": "medium"}, frozenset({".mp4", ".mkv", ".mov"}), True
    ),
    "ffv1": _Codec("ffv1", "bgr0", {}, frozenset({".mkv", ".avi"}), True),
}
"""Codec names accepted by :func:`write_video`."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` reports.

    Attributes:
        frames: number of decodable frames (not just the container's claim).
        width: frame width in pixels.
        height: frame height in pixels.
        fps: average frame rate (0.0 if the container does not say).
    """

    frames: int
    width: int
    height: int
    fps: float


def _require_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"video file {str(path)!r} does not exist; check the path")
    return path


def _open(path: Path) -> Any:
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as e:
        raise DataError(f"{path}: cannot open as a video ({e}); the file is corrupt or not a video - replace it") from e
    if not container.streams.video:
        container.close()
        raise DataError(f"{path}: holds no video stream; expected an .mp4/.mkv with one video track")
    return container


def _check_size(path: Path, width: int, height: int, expected_size: tuple[int, int] | None) -> None:
    if expected_size is None:
        return
    exp_h, exp_w = expected_size
    if (height, width) != (exp_h, exp_w):
        raise DataError(
            f"{path}: frames are {width}x{height} (W x H), expected {exp_w}x{exp_h} (W x H); resize to "
            f"{exp_w}x{exp_h} (W x H) first (e.g. read with size=({exp_h}, {exp_w}))"
        )


def iter_frames(
    path: str | os.PathLike,
    *,
    size: tuple[int, int] | None = None,
    expected_size: tuple[int, int] | None = None,
    interpolation: str = "BILINEAR",
) -> Iterator[np.ndarray]:
    """Stream the frames of a video as ``uint8[H, W, 3]`` RGB arrays, one at a time.

    Args:
        path: the video file.
        size: ``(H, W)`` to resize every frame to (swscale, ``interpolation``); ``None`` keeps the native size.
        expected_size: ``(H, W)`` the native frames must have (checked before any resize); ``None`` skips the check.
        interpolation: a swscale filter name (``"BILINEAR"``, ``"AREA"``, ``"BICUBIC"``, ``"POINT"``, ...).

    Raises:
        MissingFileError: ``path`` does not exist (raised at the call, not at the first ``next``).
        DataError: the file cannot be opened or decoded, or its frames are not ``expected_size``.
    """
    path = _require_file(path)
    return _frame_stream(path, size, expected_size, interpolation)


def _frame_stream(
    path: Path, size: tuple[int, int] | None, expected_size: tuple[int, int] | None, interpolation: str
) -> Iterator[np.ndarray]:
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        decoded = 0
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except av.FFmpegError as e:
                raise DataError(
                    f"{path}: decoding failed after {decoded} frames ({e}); the file is corrupt - re-encode or "
                    "replace it"
                ) from e
            if decoded == 0:
                _check_size(path, frame.width, frame.height, expected_size)
            decoded += 1
            if size is not None and (frame.height, frame.width) != tuple(size):
                frame = frame.reformat(width=size[1], height=size[0], format="rgb24", interpolation=interpolation)
            yield frame.to_ndarray(format="rgb24")


def read_video(
    path: str | os.PathLike,
    *,
    expected_frames: int | None = None,
    expected_size: tuple[int, int] | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode a whole video into ``uint8[T, H, W, 3]`` RGB.

    Args:
        path: the video file.
        expected_frames: the exact frame count required; ``None`` accepts any count >= 1.
        expected_size: ``(H, W)`` the native frames must have; ``None`` skips the check.
        size: ``(H, W)`` to resize to after the check; ``None`` keeps the native size.

    Raises:
        MissingFileError: ``path`` does not exist.
        DataError: corrupt/undecodable file; truncated (fewer frames than ``expected_frames``, message gives both
            counts); too many frames; wrong size (message says what to resize to).
    """
    path = _require_file(path)
    frames: list[np.ndarray] = []
    for frame in _frame_stream(path, size, expected_size, "BILINEAR"):
        frames.append(frame)
        if expected_frames is not None and len(frames) > expected_frames:
            raise DataError(
                f"{path}: has more than the expected {expected_frames} frames; trim it to {expected_frames} frames"
            )
    if expected_frames is not None and len(frames) < expected_frames:
        raise DataError(
            f"{path}: truncated video: decoded {len(frames)} frames, expected {expected_frames}; the file is "
            "incomplete or corrupt - re-encode or replace it"
        )
    if not frames:
        raise DataError(f"{path}: holds no decodable frames; the file is empty or corrupt - replace it")
    return np.stack(frames)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, size and frame rate of a video.

    The container's frame count is trusted only when it equals the number of video packets actually present
    (demuxing is cheap, decoding is not); otherwise (no count, as in .mkv, or a header that lies, as in a truncated
    .mp4) the frames are decoded and counted.

    Raises:
        MissingFileError: ``path`` does not exist.
        DataError: the file cannot be opened, or a packet cannot be read.
    """
    path = _require_file(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        claimed = stream.frames
        try:
            packets = sum(1 for packet in container.demux(stream) if packet.size > 0)
        except av.FFmpegError as e:
            raise DataError(f"{path}: reading packets failed ({e}); the file is corrupt - replace it") from e
    if claimed > 0 and packets == claimed:
        return VideoInfo(frames=claimed, width=width, height=height, fps=fps)
    decoded = sum(1 for _ in _frame_stream(path, None, None, "BILINEAR"))
    return VideoInfo(frames=decoded, width=width, height=height, fps=fps)


def _as_fraction(fps: float | Fraction) -> Fraction:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not math.isfinite(fps) or fps <= 0:
        raise ConfigError(f"fps must be a positive finite number, got {fps!r}")
    return Fraction(fps).limit_denominator(1_000_000)


def _check_frame(frame: Any, index: int, first_shape: tuple[int, ...] | None) -> np.ndarray:
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise FrameError(
            f"frame {index} must be uint8[H, W, 3] RGB, got {array.dtype}{list(array.shape)}; convert with "
            "np.clip(x, 0, 255).astype(np.uint8) and keep 3 channels"
        )
    if first_shape is not None and array.shape != first_shape:
        raise FrameError(f"frame {index} has shape {array.shape} but frame 0 has {first_shape}; all frames must match")
    return array


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray] | np.ndarray,
    fps: float | Fraction,
    *,
    codec: str = "h264",
) -> int:
    """Encode RGB frames to ``path`` atomically (temp file in the same folder + ``os.replace``).

    Args:
        path: output file; its suffix picks the container and must suit ``codec`` (see :data:`CODECS`).
        frames: ``uint8[T, H, W, 3]`` or any iterable of ``uint8[H, W, 3]`` (streamed; never stacked).
        fps: frame rate (MineWorld writes 6, VPT recordings are 20).
        codec: ``"h264"`` (default, lossy), ``"mp4v"`` (lossy, as MineWorld), ``"h264-lossless"`` or ``"ffv1"``
            (bit-exact).

    Returns:
        The number of frames written.

    Raises:
        ConfigError: unknown codec, a suffix the codec cannot go in, or a bad fps.
        FrameError: a frame is not ``uint8[H, W, 3]``, frames differ in shape, odd size for a yuv420p codec, or no
            frames. ``path`` is untouched on any error.
    """
    path = Path(path)
    if codec not in CODECS:
        raise ConfigError(f"unknown codec {codec!r}; choose one of {sorted(CODECS)}")
    spec = CODECS[codec]
    suffix = path.suffix.lower()
    if suffix not in spec.suffixes:
        raise ConfigError(
            f"codec {codec!r} cannot be written to a {suffix or 'suffix-less'} file ({path}); use one of "
            f"{sorted(spec.suffixes)}" + (" or codec='h264-lossless' for a lossless .mp4" if codec == "ffv1" else "")
        )
    rate = _as_fraction(fps)
    written = 0
    with atomic_output(path) as tmp, av.open(str(tmp), mode="w") as container:
        stream = None
        first_shape: tuple[int, ...] | None = None
        for index, frame in enumerate(frames):
            array = _check_frame(frame, index, first_shape)
            if stream is None:
                first_shape = array.shape
                height, width = array.shape[:2]
                if spec.needs_even_size and (height % 2 or width % 2):
                    raise FrameError(
                        f"codec {codec!r} (yuv420p) needs even width and height, got {width}x{height} (W x H); crop or "
                        "pad to even sizes, or use codec='h264-lossless' / 'ffv1'"
                    )
                stream = container.add_stream(spec.encoder, rate=rate, options=dict(spec.options))
                stream.width, stream.height, stream.pix_fmt = width, height, spec.pix_fmt
                if spec.qscale is not None:
                    stream.codec_context.qscale = spec.qscale
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
            written += 1
        if stream is None:
            raise FrameError(f"write_video({str(path)!r}) got no frames; pass at least one uint8[H, W, 3] frame")
        for packet in stream.encode():
            container.mux(packet)
    return written
