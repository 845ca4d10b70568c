"""Video IO and clip datasets shared by training, environments and evaluation.

* :mod:`worldmodels.data.video` - PyAV streaming decode (RGB ``uint8``), reliable probing, atomic encode.
* :mod:`worldmodels.data.jsonl` - strict JSON Lines (``json.loads`` only, errors with file and line).
* :mod:`worldmodels.data.clips` - MineWorld validation clips and VPT contractor recordings.
* :mod:`worldmodels.data.shards` - sharded recorded trajectories (``.npz`` + manifest) for training.
"""

from __future__ import annotations

from worldmodels.data.clips import (
    MINEWORLD_FPS,
    MINEWORLD_FRAMES,
    MINEWORLD_SIZE,
    VPT_FPS,
    VPT_SIZE,
    Clip,
    MineWorldClips,
    VPTChunk,
    VPTDataset,
    VPTRecording,
    mineworld_clip_number,
    write_mineworld_clip,
    write_vpt_recording,
)
from worldmodels.data.shards import ShardDataset, load_shard, read_manifest, write_manifest, write_shard
from worldmodels.data.jsonl import count_jsonl_lines, iter_jsonl, read_jsonl, write_jsonl
from worldmodels.data.video import CODECS, VideoInfo, iter_frames, probe_video, read_video, write_video

__all__ = [
    "ShardDataset",
    "load_shard",
    "read_manifest",
    "write_manifest",
    "write_shard",
    "CODECS",
    "MINEWORLD_FPS",
    "MINEWORLD_FRAMES",
    "MINEWORLD_SIZE",
    "VPT_FPS",
    "VPT_SIZE",
    "Clip",
    "MineWorldClips",
    "VPTChunk",
    "VPTDataset",
    "VPTRecording",
    "VideoInfo",
    "count_jsonl_lines",
    "iter_frames",
    "iter_jsonl",
    "mineworld_clip_number",
    "probe_video",
    "read_jsonl",
    "read_video",
    "write_jsonl",
    "write_mineworld_clip",
    "write_video",
    "write_vpt_recording",
]
