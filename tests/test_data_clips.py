"""worldmodels.data.jsonl and worldmodels.data.clips: strict JSON Lines, MineWorld clips, VPT recordings."""

from __future__ import annotations

import json
import os
import types
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from worldmodels.actions.minecraft import ACTION_KEYS, BUTTON_KEYS
from worldmodels.data import (
    Clip,
    MineWorldClips,
    VPTDataset,
    VPTRecording,
    count_jsonl_lines,
    iter_jsonl,
    mineworld_clip_number,
    read_jsonl,
    write_jsonl,
    write_mineworld_clip,
    write_video,
    write_vpt_recording,
)
from worldmodels.errors import ActionError, ConfigError, DataError, FrameError, MissingFileError

H, W = 224, 384  # MineWorld clip size


def frames_for(t: int, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def env_action(seed: int) -> dict[str, Any]:
    """A full 24-key MineRL action built by hand (buttons from the seed's bits, a fractional camera)."""
    rng = np.random.default_rng(seed)
    action: dict[str, Any] = {key: int(bit) for key, bit in zip(BUTTON_KEYS, rng.integers(0, 2, len(BUTTON_KEYS)))}
    action["camera"] = [float(rng.normal() * 5), float(rng.normal() * 5)]
    return action


def actions_for(t: int, seed: int = 0) -> list[dict[str, Any]]:
    return [env_action(seed * 1000 + i) for i in range(t)]


def vpt_line(keys: tuple[str, ...] = (), dx: float = 0.0, dy: float = 0.0, buttons: tuple[int, ...] = ()) -> dict:
    """A raw contractor line with the fields of the VPT README example (plus the ones converters read)."""
    return {
        "mouse": {"x": 640.0, "y": 360.0, "dx": dx, "dy": dy, "scaledX": 0.0, "scaledY": 0.0, "dwheel": 0.0,
                  "buttons": list(buttons), "newButtons": []},
        "keyboard": {"keys": [f"key.keyboard.{k}" for k in keys], "newKeys": [], "chars": ""},
        "isGuiOpen": False, "isGuiInventory": False, "hotbar": 0, "yaw": 0.0, "pitch": 0.0,
        "xpos": 0.0, "ypos": 64.0, "zpos": 0.0, "tick": 0, "milli": 0, "inventory": [],
    }  # fmt: skip


def official_sort_key(name: str) -> int:
    # MineWorld inference.py: sorted(files, key=lambda x: int(x.split('_')[1].split('.')[0]))
    return int(name.split("_")[1].split(".")[0])


def write_faststart_then_truncate(path: Path, frames: np.ndarray, keep: float) -> None:
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264rgb", rate=20, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --- jsonl --------------------------------------------------------------------------------------------------------


def test_jsonl_round_trip_with_numpy_values(tmp_path: Path) -> None:
    rows = [{"a": np.int64(3), "camera": np.array([0.5, -1.25])}, {"b": [1, 2], "c": "x"}]
    path = tmp_path / "rows.jsonl"
    assert write_jsonl(path, rows) == 2
    assert path.read_text() == '{"a": 3, "camera": [0.5, -1.25]}\n{"b": [1, 2], "c": "x"}\n'
    assert read_jsonl(path) == [{"a": 3, "camera": [0.5, -1.25]}, {"b": [1, 2], "c": "x"}]
    assert isinstance(iter_jsonl(path), types.GeneratorType)
    assert count_jsonl_lines(path) == 2


def test_jsonl_accepts_crlf_and_a_missing_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\r\n{"a": 2}')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert count_jsonl_lines(path) == 2


@pytest.mark.parametrize(
    ("text", "lineno", "what"),
    [
        ('{"a": 1}\n{"a": \n{"a": 3}\n', 2, "is not valid JSON"),
        ('{"a": 1}\n[1, 2]\n', 2, "is a JSON list, expected an object"),
        ('{"a": 1}\n\n{"a": 3}\n', 2, "is blank"),
        ('{"a": 1}\n{"a": 2}\n   \n', 3, "is blank"),
        ('{"a": 1}\n{"a": 2}\n{"a": NaN}\n', 3, "NaN"),
        ("{'a': 1}\n", 1, "is not valid JSON"),  # Python literal syntax: eval would take it, json.loads must not
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, text: str, lineno: int, what: str) -> None:
    path = tmp_path / "bad_rows.jsonl"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    message = str(info.value)
    assert "bad_rows.jsonl" in message and f"line {lineno}" in message and what in message


def test_jsonl_never_evaluates_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.jsonl"
    path.write_text(f"__import__('pathlib').Path({str(marker)!r}).touch()\n")
    with pytest.raises(DataError, match="line 1"):
        read_jsonl(path)
    assert not marker.exists()


def test_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="absent.jsonl"):
        read_jsonl(tmp_path / "absent.jsonl")


def test_write_jsonl_is_atomic_and_refuses_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"a": 1}])
    with pytest.raises(DataError, match="row 1"):
        write_jsonl(path, [{"a": 2}, {"a": float("inf")}])
    with pytest.raises(DataError, match="row 0 is a list"):
        write_jsonl(path, [[1, 2]])
    with pytest.raises(DataError, match="row 0 cannot be written"):
        write_jsonl(path, [{"a": object()}])
    assert read_jsonl(path) == [{"a": 1}]
    assert os.listdir(tmp_path) == ["rows.jsonl"]


# --- MineWorld clips ----------------------------------------------------------------------------------------------


def test_clip_number_matches_the_official_key() -> None:
    names = ["clip_10.mp4", "clip_2.mp4", "clip_1.mp4", "clip_100.mp4", "clip_33.mp4", "clip_3.mp4"]
    for name in names:
        assert mineworld_clip_number(name) == official_sort_key(name)
    assert sorted(names, key=mineworld_clip_number) == sorted(names, key=official_sort_key)
    assert sorted(names, key=mineworld_clip_number)[:3] == ["clip_1.mp4", "clip_2.mp4", "clip_3.mp4"]
    assert sorted(names) != sorted(names, key=mineworld_clip_number)  # lexicographic order would differ


@pytest.mark.parametrize("name", ["clip10.mp4", "my_clip_3.mp4", "clip_.mp4", "clip_x.mp4"])
def test_clip_number_rejects_unparsable_names(name: str) -> None:
    with pytest.raises(DataError, match=rf"{name}.*<prefix>_<N>\.mp4"):
        mineworld_clip_number(name)


@pytest.fixture()
def clip_dir(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, list[dict]]]]:
    written = {}
    for seed, name in enumerate(["clip_10", "clip_2", "clip_1"]):
        frames, actions = frames_for(16, seed=seed), actions_for(16, seed=seed)
        write_mineworld_clip(tmp_path, name, frames, actions, codec="h264-lossless")
        written[name] = (frames, actions)
    return tmp_path, written


def test_mineworld_clips_order_and_content(clip_dir) -> None:
    root, written = clip_dir
    clips = MineWorldClips(root)
    assert len(clips) == 3
    assert clips.names == ["clip_1", "clip_2", "clip_10"]  # clip_2 before clip_10
    for index, name in enumerate(clips.names):
        clip = clips[index]
        assert isinstance(clip, Clip) and clip.name == name
        frames, actions = written[name]
        assert clip.frames.shape == (16, H, W, 3) and clip.frames.dtype == np.uint8
        np.testing.assert_array_equal(clip.frames, frames)
        assert len(clip.actions) == 16
        for got, expected in zip(clip.actions, actions):
            assert set(got) == set(ACTION_KEYS)
            assert all(got[key] == expected[key] for key in BUTTON_KEYS)
            np.testing.assert_array_equal(got["camera"], np.array(expected["camera"]))
    assert clips[-1].name == "clip_10"
    with pytest.raises(IndexError):
        clips[3]


def test_mineworld_clips_stream_one_clip_at_a_time(clip_dir) -> None:
    root, _ = clip_dir
    stream = iter(MineWorldClips(root))
    assert isinstance(stream, types.GeneratorType)
    assert next(stream).name == "clip_1"
    assert [clip.name for clip in stream] == ["clip_2", "clip_10"]


def test_mineworld_clips_limit_and_jsonl_format(clip_dir) -> None:
    root, written = clip_dir
    assert MineWorldClips(root, limit=2).names == ["clip_1", "clip_2"]
    lines = (root / "clip_2.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == written["clip_2"][1]  # plain env-action JSON, one per frame


def test_validate_false_returns_the_parsed_lines(clip_dir) -> None:
    root, written = clip_dir
    clip = MineWorldClips(root, validate=False)[0]
    assert clip.actions == written["clip_1"][1]


def test_mineworld_missing_partner_files(tmp_path: Path) -> None:
    write_mineworld_clip(tmp_path, "clip_1", frames_for(16), actions_for(16), codec="h264-lossless")
    (tmp_path / "clip_1.jsonl").rename(tmp_path / "clip_5.jsonl")
    with pytest.raises(MissingFileError, match=r"clip_1\.mp4 needs clip_1\.jsonl"):
        MineWorldClips(tmp_path)
    (tmp_path / "clip_1.mp4").unlink()
    with pytest.raises(MissingFileError, match=r"clip_5\.jsonl needs clip_5\.mp4"):
        MineWorldClips(tmp_path)
    with pytest.raises(MissingFileError, match="does not exist"):
        MineWorldClips(tmp_path / "nowhere")


def test_mineworld_unparsable_clip_name(tmp_path: Path) -> None:
    write_video(tmp_path / "clip7.mp4", frames_for(16), 6, codec="h264-lossless")
    write_jsonl(tmp_path / "clip7.jsonl", actions_for(16))
    with pytest.raises(DataError, match=r"clip7\.mp4"):
        MineWorldClips(tmp_path)


def _write_raw_clip(root: Path, name: str, frames: np.ndarray, rows: list[dict]) -> None:
    write_video(root / f"{name}.mp4", frames, 6, codec="h264-lossless")
    write_jsonl(root / f"{name}.jsonl", rows)


def test_mineworld_bad_action_line_names_file_and_line(tmp_path: Path) -> None:
    rows = actions_for(16)
    del rows[2]["sneak"]
    _write_raw_clip(tmp_path, "clip_1", frames_for(16), rows)
    with pytest.raises(DataError) as info:
        MineWorldClips(tmp_path)[0]
    message = str(info.value)
    assert "clip_1.jsonl" in message and "line 3" in message and "sneak" in message


def test_mineworld_malformed_json_line(tmp_path: Path) -> None:
    _write_raw_clip(tmp_path, "clip_1", frames_for(16), actions_for(16))
    path = tmp_path / "clip_1.jsonl"
    lines = path.read_text().splitlines()
    lines[6] = lines[6][:-1]  # drop the closing brace
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"clip_1\.jsonl: line 7 is not valid JSON"):
        MineWorldClips(tmp_path)[0]


def test_mineworld_truncated_video(tmp_path: Path) -> None:
    _write_raw_clip(tmp_path, "clip_4", frames_for(15), actions_for(16))
    with pytest.raises(DataError, match=r"clip_4\.mp4: truncated video: decoded 15 frames, expected 16"):
        MineWorldClips(tmp_path)[0]


def test_mineworld_line_count_mismatch(tmp_path: Path) -> None:
    _write_raw_clip(tmp_path, "clip_4", frames_for(16), actions_for(15))
    with pytest.raises(DataError, match=r"clip_4\.jsonl: has 15 lines, expected 16"):
        MineWorldClips(tmp_path)[0]
    # Without a fixed length the video and the jsonl must still agree.
    with pytest.raises(DataError, match=r"clip_4\.mp4 has 16 frames but clip_4\.jsonl has 15 lines"):
        MineWorldClips(tmp_path, frames=None)[0]


def test_mineworld_any_length_when_frames_is_none(tmp_path: Path) -> None:
    frames = frames_for(5, 32, 48)
    write_mineworld_clip(tmp_path, "clip_1", frames, actions_for(5), codec="h264-lossless", size=None)
    clip = MineWorldClips(tmp_path, frames=None, size=None)[0]
    np.testing.assert_array_equal(clip.frames, frames)


def test_mineworld_wrong_frame_size(tmp_path: Path) -> None:
    _write_raw_clip(tmp_path, "clip_1", frames_for(16, 360, 640), actions_for(16))
    with pytest.raises(DataError) as info:
        MineWorldClips(tmp_path)[0]
    message = str(info.value)
    assert "clip_1.mp4" in message and "640x360 (W x H)" in message and "resize to 384x224 (W x H) first" in message


def test_write_mineworld_clip_refuses_bad_input(tmp_path: Path) -> None:
    frames, actions = frames_for(2), actions_for(2)
    with pytest.raises(DataError, match="<prefix>_<N>"):
        write_mineworld_clip(tmp_path, "clip2", frames, actions)
    with pytest.raises(DataError, match="without folder or extension"):
        write_mineworld_clip(tmp_path, "clip_2.mp4", frames, actions)
    with pytest.raises(FrameError, match=r"resize to 384x224 \(W x H\)"):
        write_mineworld_clip(tmp_path, "clip_2", frames_for(2, 360, 640), actions)
    with pytest.raises(DataError, match="2 frames but 1 actions"):
        write_mineworld_clip(tmp_path, "clip_2", frames, actions[:1])
    bad = [actions[0], {**actions[1], "fly": 1}]
    with pytest.raises(ActionError, match=r"action 1:.*unknown keys \['fly'\]"):
        write_mineworld_clip(tmp_path, "clip_2", frames, bad)
    assert os.listdir(tmp_path) == []


# --- VPT recordings -----------------------------------------------------------------------------------------------

VH, VW = 36, 64  # tiny stand-in for 640x360


def vpt_lines(n: int) -> list[dict]:
    pattern = [
        vpt_line(keys=("w",), dx=37.5, dy=-10.0),  # forward; camera [-1.5, 5.625]
        vpt_line(),  # null
        vpt_line(keys=("space", "left.shift"), buttons=(0,)),  # jump, sneak, attack
        vpt_line(dx=2.0, dy=3.0, buttons=(1,)),  # use; camera [0.45, 0.3]
    ]
    return [pattern[i % len(pattern)] for i in range(n)]


def test_vpt_iter_chunks(tmp_path: Path) -> None:
    frames, lines = frames_for(10, VH, VW, seed=3), vpt_lines(10)
    recording = write_vpt_recording(tmp_path / "rec.mp4", frames, lines, codec="h264-lossless")
    assert recording.name == "rec" and len(recording) == 10
    chunks = list(recording.iter_chunks(4))
    assert [len(c) for c in chunks] == [4, 4, 2] and [c.start for c in chunks] == [0, 4, 8]
    np.testing.assert_array_equal(np.concatenate([c.frames for c in chunks]), frames)
    assert [line for c in chunks for line in c.raw_lines] == lines
    first = chunks[0]
    assert first.recording == "rec"
    assert first.null.tolist() == [False, True, False, False]
    forward, null, jump, use = first.env_actions
    assert forward["forward"] == 1 and sum(forward[k] for k in BUTTON_KEYS) == 1
    np.testing.assert_allclose(forward["camera"], [-10.0 * 0.15, 37.5 * 0.15])
    assert sum(null[k] for k in BUTTON_KEYS) == 0 and np.all(null["camera"] == 0)
    assert (jump["jump"], jump["sneak"], jump["attack"]) == (1, 1, 1)
    assert use["use"] == 1
    np.testing.assert_allclose(use["camera"], [0.45, 0.3])
    assert [len(c) for c in recording.iter_chunks(4, drop_last=True)] == [4, 4]


def test_vpt_legacy_int_camera_truncates_toward_zero(tmp_path: Path) -> None:
    write_vpt_recording(tmp_path / "rec.mp4", frames_for(4, VH, VW), vpt_lines(4), codec="h264-lossless")
    recording = VPTRecording(tmp_path / "rec.mp4", legacy_int_camera=True, expected_size=(VH, VW))
    actions = next(recording.iter_chunks(4)).env_actions
    np.testing.assert_array_equal(actions[0]["camera"], [-1.0, 5.0])  # -1.5 -> -1, 5.625 -> 5
    np.testing.assert_array_equal(actions[3]["camera"], [0.0, 0.0])  # 0.45, 0.3 -> 0


def test_vpt_iter_chunks_streams(tmp_path: Path) -> None:
    recording = write_vpt_recording(tmp_path / "rec.mp4", frames_for(6, VH, VW), vpt_lines(6), codec="h264-lossless")
    stream = recording.iter_chunks(2)
    assert isinstance(stream, types.GeneratorType)
    assert next(stream).start == 0


def test_vpt_missing_partner(tmp_path: Path) -> None:
    write_vpt_recording(tmp_path / "rec.mp4", frames_for(2, VH, VW), vpt_lines(2), codec="h264-lossless")
    (tmp_path / "rec.jsonl").rename(tmp_path / "other.jsonl")
    with pytest.raises(MissingFileError, match=r"rec\.mp4 has no jsonl partner rec\.jsonl"):
        VPTRecording(tmp_path / "rec.mp4")
    with pytest.raises(MissingFileError, match=r"rec\.mp4 needs rec\.jsonl"):
        VPTDataset(tmp_path)
    with pytest.raises(MissingFileError, match=r"other\.mp4.*does not exist \(its jsonl other\.jsonl exists\)"):
        VPTRecording(tmp_path / "other.mp4")
    (tmp_path / "rec.mp4").unlink()
    with pytest.raises(MissingFileError, match=r"other\.jsonl needs other\.mp4"):
        VPTDataset(tmp_path)


def test_vpt_frame_count_differs_from_line_count(tmp_path: Path) -> None:
    write_video(tmp_path / "rec.mp4", frames_for(5, VH, VW), 20, codec="h264-lossless")
    write_jsonl(tmp_path / "rec.jsonl", vpt_lines(7))
    recording = VPTRecording(tmp_path / "rec.mp4", expected_size=(VH, VW))
    with pytest.raises(DataError, match=r"rec\.mp4 has 5 frames but rec\.jsonl has 7 lines"):
        next(recording.iter_chunks(2))


def test_vpt_truncated_video_with_a_lying_header(tmp_path: Path) -> None:
    write_faststart_then_truncate(tmp_path / "rec.mp4", frames_for(16, VH, VW, seed=9), keep=0.5)
    write_jsonl(tmp_path / "rec.jsonl", vpt_lines(16))
    recording = VPTRecording(tmp_path / "rec.mp4", expected_size=(VH, VW))
    with pytest.raises(DataError, match=r"rec\.mp4 has \d+ frames but rec\.jsonl has 16 lines"):
        list(recording.iter_chunks(4))


def test_vpt_malformed_and_unconvertible_lines(tmp_path: Path) -> None:
    lines = vpt_lines(6)
    write_vpt_recording(tmp_path / "rec.mp4", frames_for(6, VH, VW), lines, codec="h264-lossless")
    path = tmp_path / "rec.jsonl"
    text = path.read_text().splitlines()
    path.write_text("\n".join(text[:4] + ["{oops"] + text[5:]) + "\n")
    recording = VPTRecording(tmp_path / "rec.mp4", expected_size=(VH, VW))
    with pytest.raises(DataError, match=r"rec\.jsonl: line 5 is not valid JSON"):
        list(recording.iter_chunks(2))
    no_mouse = dict(lines[2])
    del no_mouse["mouse"]
    write_jsonl(path, lines[:2] + [no_mouse] + lines[3:])
    with pytest.raises(DataError, match=r"rec\.jsonl: line 3: .*mouse"):
        list(recording.iter_chunks(2))


def test_vpt_wrong_frame_size(tmp_path: Path) -> None:
    write_vpt_recording(tmp_path / "rec.mp4", frames_for(2, VH, VW), vpt_lines(2), codec="h264-lossless")
    recording = VPTRecording(tmp_path / "rec.mp4")  # default: contractor size 640x360
    with pytest.raises(DataError) as info:
        next(recording.iter_chunks(2))
    message = str(info.value)
    assert "rec.mp4" in message and "64x36 (W x H)" in message and "resize to 640x360 (W x H) first" in message


def test_vpt_dataset_from_folder(tmp_path: Path) -> None:
    for relpath, seed in (("6.13/b", 1), ("6.10/a", 2), ("6.13/a", 3)):
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        frames = frames_for(3, VH, VW, seed)
        write_vpt_recording(tmp_path / f"{relpath}.mp4", frames, vpt_lines(3), codec="h264-lossless")
    dataset = VPTDataset(tmp_path, expected_size=(VH, VW))
    assert len(dataset) == 3
    assert [p.relative_to(tmp_path).as_posix() for p in dataset.paths] == ["6.10/a.mp4", "6.13/a.mp4", "6.13/b.mp4"]
    chunks = list(dataset.iter_chunks(2))
    expected = [("a", 0, 2), ("a", 2, 1), ("a", 0, 2), ("a", 2, 1), ("b", 0, 2), ("b", 2, 1)]
    assert [(c.recording, c.start, len(c)) for c in chunks] == expected
    np.testing.assert_array_equal(chunks[0].frames, frames_for(3, VH, VW, 2)[:2])


def test_vpt_dataset_from_index(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_vpt_recording(data / "6.13" / "x.mp4", frames_for(2, VH, VW), vpt_lines(2), codec="h264-lossless")
    write_vpt_recording(data / "y.mp4", frames_for(2, VH, VW), vpt_lines(2), codec="h264-lossless")  # flattened
    url_index = tmp_path / "all_6xx.json"
    url_index.write_text(
        json.dumps({"basedir": "https://example.invalid/minecraft-rl/", "relpaths": ["6.13/x.mp4", "7.1/y"]})
    )
    with pytest.raises(ConfigError, match="is a URL.*basedir=<local folder>"):
        VPTDataset(url_index)
    dataset = VPTDataset(url_index, basedir=data, expected_size=(VH, VW))
    assert [p.relative_to(data).as_posix() for p in dataset.paths] == ["6.13/x.mp4", "y.mp4"]
    assert [r.name for r in dataset] == ["x", "y"]
    local_index = tmp_path / "local.json"
    local_index.write_text(json.dumps({"basedir": "data", "relpaths": ["6.13/x.mp4", "6.13/missing.mp4"]}))
    with pytest.raises(MissingFileError, match=r"1 of 2 recordings are missing.*'6\.13/missing\.mp4'"):
        VPTDataset(local_index)
    bad_index = tmp_path / "bad.json"
    bad_index.write_text(json.dumps({"basedir": "data", "relpaths": "6.13/x.mp4"}))
    with pytest.raises(DataError, match=r"bad\.json.*relpaths"):
        VPTDataset(bad_index)


def test_write_vpt_recording_count_mismatch(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="3 frames but 2 jsonl lines"):
        write_vpt_recording(tmp_path / "rec.mp4", frames_for(3, VH, VW), vpt_lines(2))
    assert os.listdir(tmp_path) == []
