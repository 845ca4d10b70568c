"""worldmodels.data.shards: the trajectory shard format, windows that line up, uniform sampling, reproducible
files, and an error naming the file for every kind of damage."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worldmodels.data.shards import (
    MANIFEST_NAME,
    ShardDataset,
    ShardIntegrityError,
    load_shard,
    read_manifest,
    write_manifest,
    write_shard,
)
from worldmodels.errors import ConfigError, DataError, IntegrityError, MissingFileError


def episode_arrays(lengths: list[int], first_frame: int = 0, size: int = 4) -> dict[str, np.ndarray]:
    """Episodes laid end to end; every frame is filled with its global frame number so windows can be checked."""
    n = sum(lengths)
    ids = np.arange(first_frame, first_frame + n)
    frames = np.broadcast_to((ids % 256).astype(np.uint8)[:, None, None, None], (n, size, size, 3)).copy()
    frames[:, 0, 0, 0] = ids // 256  # keep frames distinct past 255
    starts = np.cumsum([0, *lengths[:-1]])
    last = np.append(starts[1:], n) - 1
    actions = (ids % 17).astype(np.int64)
    actions[last] = -1
    terminated = np.zeros(n, bool)
    terminated[last[::2]] = True  # every other episode ends in death
    return dict(
        frames=frames,
        actions=actions,
        rewards=(ids / 10).astype(np.float32),
        terminated=terminated,
        episode_starts=starts,
        extras={"health": (ids % 10).astype(np.uint8), "episode_seeds": np.arange(len(lengths)) + 100},
    )


def frame_number(frame: np.ndarray) -> int:
    return int(frame[0, 0, 0]) * 256 + int(frame[1, 1, 1])


def make_dataset(root: Path, shard_lengths: list[list[int]]) -> ShardDataset:
    infos, offset = [], 0
    for k, lengths in enumerate(shard_lengths):
        infos.append(write_shard(root / f"shard-{k:05d}.npz", **episode_arrays(lengths, offset)))
        offset += sum(lengths)
    write_manifest(root, infos, config={"writer": "test"}, metadata={"note": [1, 2]})
    return ShardDataset(root)


def test_round_trip_episodes_and_manifest(tmp_path):
    ds = make_dataset(tmp_path, [[5, 3], [7]])
    assert len(ds) == 15 and ds.n_episodes == 3 and ds.episode_lengths.tolist() == [5, 3, 7]
    assert ds.frame_shape == (4, 4, 3) and ds.config == {"writer": "test"}
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["frames"] == 15 and manifest["episodes"] == 3 and manifest["metadata"] == {"note": [1, 2]}
    for entry in manifest["shards"]:  # sha256 recomputed independently
        assert entry["sha256"] == hashlib.sha256((tmp_path / entry["file"]).read_bytes()).hexdigest()
    episodes = list(ds.episodes())
    assert [len(e) for e in episodes] == [5, 3, 7]
    assert [frame_number(f) for f in episodes[1].frames] == [5, 6, 7]
    assert episodes[1].actions.tolist() == [5, 6, -1] and episodes[2].terminated.tolist() == [False] * 6 + [True]
    assert episodes[2].extras["health"].tolist() == [(8 + i) % 10 for i in range(7)]
    assert [int(e.episode_extras["episode_seeds"]) for e in episodes] == [100, 101, 100]
    assert episodes[2].rewards.dtype == np.float32 and episodes[2].rewards[0] == np.float32(8 / 10)


def test_shards_are_plain_npz_and_reproducible(tmp_path):
    arrays = episode_arrays([4, 6])
    a = write_shard(tmp_path / "a.npz", **arrays)
    b = write_shard(tmp_path / "b.npz", **arrays)
    assert a.sha256 == b.sha256 and (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as archive:
        assert set(archive.files) == {"frames", "actions", "rewards", "terminated", "episode_starts", "health",
                                      "episode_seeds"}  # fmt: skip
        np.testing.assert_array_equal(archive["frames"], arrays["frames"])
        assert archive["actions"].dtype == np.int64 and archive["terminated"].dtype == bool
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:
        assert all(m.compress_type == zipfile.ZIP_DEFLATED for m in archive.infolist())


def test_window_lines_up_frames_and_actions(tmp_path):
    ds = make_dataset(tmp_path, [[5, 3], [7]])
    frames, actions = ds.window(2, 1, 4)
    assert frames.shape == (5, 4, 4, 3) and actions.shape == (4,)
    assert [frame_number(f) for f in frames] == [9, 10, 11, 12, 13]
    assert actions.tolist() == [9, 10, 11, 12]  # action k is taken at frame k of the window
    frames, actions = ds.window(0, 0, 4)  # the whole first episode
    assert [frame_number(f) for f in frames] == [0, 1, 2, 3, 4] and -1 not in actions
    data = ds.window_data(2, 1, 4)
    assert data["actions"].tolist() == [9, 10, 11, 12, 13] and data["health"].tolist() == [9, 0, 1, 2, 3]
    assert data["rewards"].shape == (5,) and "episode_seeds" not in data
    for episode, start, length in [(0, 2, 3), (1, 0, 3), (2, 0, 0), (3, 0, 1), (0, -1, 2)]:
        with pytest.raises(ConfigError):
            ds.window(episode, start, length)


def test_sample_windows_is_uniform_over_valid_windows(tmp_path):
    ds = make_dataset(tmp_path, [[3, 10], [2]])
    assert ds.n_windows(2) == 1 + 8 + 0
    index = ds.sample_window_index(9000, 2, np.random.default_rng(0))
    pairs, counts = np.unique(index, axis=0, return_counts=True)
    assert [tuple(p) for p in pairs] == [(0, 0)] + [(1, s) for s in range(8)]
    assert counts.min() > 850 and counts.max() < 1150  # 1000 expected each
    frames, actions = ds.sample_windows(50, 2, np.random.default_rng(1))
    assert frames.shape == (50, 3, 4, 4, 3) and actions.shape == (50, 2)
    for clip, acts in zip(frames, actions):
        numbers = [frame_number(f) for f in clip]
        assert numbers == list(range(numbers[0], numbers[0] + 3)) and acts.tolist() == [n % 17 for n in numbers[:2]]
    again = ds.sample_windows(50, 2, np.random.default_rng(1))
    np.testing.assert_array_equal(again[0], frames)
    with pytest.raises(ConfigError, match="shorter"):
        ds.sample_windows(1, 10, np.random.default_rng(0))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=4), min_size=1, max_size=3), st.integers(1, 4))
def test_every_sampled_window_matches_the_concatenated_arrays(tmp_path_factory, shard_lengths, length):
    root = tmp_path_factory.mktemp("prop")
    ds = make_dataset(root, shard_lengths)
    lengths = [n for shard in shard_lengths for n in shard]
    assert ds.n_windows(length) == sum(max(0, n - length) for n in lengths)
    if ds.n_windows(length) == 0:
        return
    starts = np.cumsum([0, *lengths[:-1]])
    for episode, start in ds.sample_window_index(20, length, np.random.default_rng(0)):
        assert 0 <= start and start + length < lengths[episode]
        frames, actions = ds.window(int(episode), int(start), length)
        first = starts[episode] + start
        assert [frame_number(f) for f in frames] == list(range(first, first + length + 1))
        assert (actions >= 0).all()


def test_lru_cache_keeps_at_most_the_requested_shards(tmp_path):
    make_dataset(tmp_path, [[3], [3], [3]])
    ds = ShardDataset(tmp_path, max_cached_shards=1)
    for episode in (0, 1, 2, 0):
        assert frame_number(ds.episode(episode).frames[0]) == 3 * episode
    assert len(ds._cache) == 1


def test_write_shard_rejects_inconsistent_arrays(tmp_path):
    good = episode_arrays([3, 4])
    cases = {
        "last frame of episode 0": dict(actions=np.array([1, 2, 3, 4, 5, 6, -1])),
        "is not an episode's last frame": dict(actions=np.array([1, -1, -1, 4, 5, 6, -1])),
        "marked terminated": dict(terminated=np.array([True, False, False, False, False, False, False])),
        "shape (7,)": dict(rewards=np.zeros(6, np.float32)),
        "episode_starts": dict(episode_starts=np.array([1, 3])),
        "increase": dict(episode_starts=np.array([0, 3, 3])),
        "NaN": dict(rewards=np.full(7, np.nan)),
        "frames must be": dict(frames=np.zeros((7, 4, 4), np.uint8)),
    }
    for message, change in cases.items():
        with pytest.raises(DataError, match=re.escape(message)):
            write_shard(tmp_path / "bad.npz", **{**good, **change})
    with pytest.raises(DataError, match="first dimension"):
        write_shard(tmp_path / "bad.npz", **{**good, "extras": {"health": np.zeros(6)}})
    with pytest.raises(DataError, match="episode_seeds"):
        write_shard(tmp_path / "bad.npz", **{**good, "extras": {"episode_seeds": np.zeros(7)}})
    with pytest.raises(DataError, match="clashes"):
        write_shard(tmp_path / "bad.npz", **{**good, "extras": {"frames": np.zeros(7)}})
    with pytest.raises(DataError, match="integers"):
        write_shard(tmp_path / "bad.npz", **{**good, "actions": np.zeros(7) + 0.5})
    assert not (tmp_path / "bad.npz").exists()


def rewrite_with_new_sha(root: Path, file: str) -> None:
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    for entry in manifest["shards"]:
        if entry["file"] == file:
            entry["sha256"] = hashlib.sha256((root / file).read_bytes()).hexdigest()
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_truncated_shard_is_a_data_error_naming_the_file(tmp_path):
    make_dataset(tmp_path, [[3], [4]])
    path = tmp_path / "shard-00001.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    ds = ShardDataset(tmp_path, verify=False)
    ds.episode(0)  # the intact shard still reads
    with pytest.raises(DataError, match="shard-00001.npz.*truncated or corrupt"):
        ds.episode(1)


def test_sha256_mismatch_is_an_integrity_data_error(tmp_path):
    make_dataset(tmp_path, [[3], [4]])
    path = tmp_path / "shard-00000.npz"
    write_shard(path, **episode_arrays([3], first_frame=50))  # valid shard, different content
    with pytest.raises(ShardIntegrityError, match="shard-00000.npz.*sha256") as caught:
        ShardDataset(tmp_path).episode(0)
    assert isinstance(caught.value, DataError) and isinstance(caught.value, IntegrityError)
    assert frame_number(ShardDataset(tmp_path, verify=False).episode(0).frames[0]) == 50


def test_missing_array_is_named(tmp_path):
    make_dataset(tmp_path, [[3]])
    path = tmp_path / "shard-00000.npz"
    arrays = episode_arrays([3])
    np.savez_compressed(path, frames=arrays["frames"], actions=arrays["actions"], terminated=arrays["terminated"],
                        episode_starts=arrays["episode_starts"])  # fmt: skip
    rewrite_with_new_sha(tmp_path, path.name)
    with pytest.raises(DataError, match=r"shard-00000.npz.*lacks.*'rewards'"):
        ShardDataset(tmp_path).episode(0)


def test_inconsistent_lengths_and_dtypes_in_a_shard_are_named(tmp_path):
    make_dataset(tmp_path, [[3]])
    path = tmp_path / "shard-00000.npz"
    arrays = episode_arrays([3])
    base = {k: v for k, v in arrays.items() if k != "extras"}
    np.savez(path, **{**base, "actions": np.array([0, -1], np.int64)})
    rewrite_with_new_sha(tmp_path, path.name)
    with pytest.raises(DataError, match="shard-00000.npz.*actions must have shape"):
        ShardDataset(tmp_path).episode(0)
    np.savez(path, **{**base, "rewards": base["rewards"].astype(np.float64)})
    rewrite_with_new_sha(tmp_path, path.name)
    with pytest.raises(DataError, match="rewards.*float64"):
        ShardDataset(tmp_path).episode(0)
    np.savez(path, **{**base, "names": np.array(["a", None, "c"], dtype=object)})
    rewrite_with_new_sha(tmp_path, path.name)
    with pytest.raises(DataError, match="shard-00000.npz"):
        load_shard(path)


def test_manifest_and_shard_disagreeing_is_named(tmp_path):
    make_dataset(tmp_path, [[3, 4]])
    path = tmp_path / "shard-00000.npz"
    write_shard(path, **episode_arrays([4, 3]))  # same frame count, other episode lengths
    rewrite_with_new_sha(tmp_path, path.name)
    with pytest.raises(DataError, match="shard-00000.npz.*manifest"):
        ShardDataset(tmp_path).episode(0)


def test_missing_files_and_broken_manifests(tmp_path):
    with pytest.raises(MissingFileError, match="manifest.json"):
        ShardDataset(tmp_path)
    make_dataset(tmp_path, [[3], [4]])
    (tmp_path / "shard-00001.npz").unlink()
    with pytest.raises(MissingFileError, match="shard-00001.npz"):
        ShardDataset(tmp_path).episode(1)
    manifest = read_manifest(tmp_path)
    for broken, message in [
        ("{not json", "not valid JSON"),
        (json.dumps({**manifest, "format": "other"}), "format"),
        (json.dumps({**manifest, "frames": 99}), "totals"),
        (json.dumps({**manifest, "shards": [{**manifest["shards"][0], "file": "../x.npz"}]}), "malformed"),
        (json.dumps({**manifest, "shards": [{**manifest["shards"][0], "episode_lengths": [2]}]}), "malformed"),
    ]:
        (tmp_path / MANIFEST_NAME).write_text(broken)
        with pytest.raises(DataError, match=message):
            ShardDataset(tmp_path)


def test_manifest_refuses_duplicates_mixed_sizes_and_non_json(tmp_path):
    a = write_shard(tmp_path / "a.npz", **episode_arrays([3]))
    b = write_shard(tmp_path / "b.npz", **episode_arrays([3], size=8))
    with pytest.raises(DataError, match="more than once"):
        write_manifest(tmp_path, [a, a])
    with pytest.raises(DataError, match="frame shapes"):
        write_manifest(tmp_path, [a, b])
    with pytest.raises(DataError, match="JSON"):
        write_manifest(tmp_path, [a], config={"bad": object()})
    with pytest.raises(DataError, match="JSON"):
        write_manifest(tmp_path, [a], metadata={"bad": float("nan")})
