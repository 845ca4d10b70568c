"""``rlir rollout``: drive a world model with an action script from a start scene and write the video."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.errors import ActionError, ConfigError, DataError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("rollout", help="generate a video from a start scene and an action script")
    parser.add_argument("--checkpoint", required=True, help="registered model name or checkpoint path")
    parser.add_argument("--config", help="official MineWorld yaml (for official .ckpt files)")
    parser.add_argument("--vae-config", help="official VQ config.json")
    parser.add_argument(
        "--scene",
        required=True,
        help="start scene: an mp4 (its jsonl next to it supplies the actions between context frames), "
        "or crafter:SEED for a fresh real Crafter world",
    )
    parser.add_argument("--scene-frames", type=int, default=1, help="context frames taken from the scene")
    parser.add_argument("--actions", required=True, help="jsonl action script: MineRL env dicts, or Crafter action names/ids")
    parser.add_argument("--out", required=True, help="output video (.mp4)")
    parser.add_argument("--fps", type=float, default=None, help="video frame rate (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--decoding", default=None, choices=("naive", "diagonal", "speculative"),
                        help="(default: the model's, else naive)")
    parser.add_argument("--top-p", type=float, default=None,
                        help="nucleus sampling (default: the model's, else off; 1: the whole distribution)")
    parser.add_argument("--temperature", type=float, default=None, help="(default: the model's, else 1)")
    parser.set_defaults(func=run)


def read_action_script(path: str | Path, domain: str) -> np.ndarray:
    """A jsonl action script -> compact actions ``[T, ...]`` (MineRL dicts or Crafter names / ids per line)."""
    from worldmodels.actions import crafter, get_domain, minecraft
    from worldmodels.data.jsonl import read_jsonl

    # read_jsonl refuses blank lines, so its row k is line k
    rows = list(enumerate(read_jsonl(path), start=1)) if domain == "minecraft" else _read_crafter_lines(path)
    if not rows:
        raise DataError(f"action script {path} is empty")
    actions = []
    for number, row in rows:
        try:
            if domain == "minecraft":
                actions.append(minecraft.validate_env_action(row))
            else:
                actions.append(get_domain("crafter").validate(crafter.action_index(row) if isinstance(row, str) else row))
        except ActionError as error:
            raise ActionError(f"{path}:{number}: {error}") from None
    return minecraft.to_compact(actions) if domain == "minecraft" else np.stack(actions)


def _read_crafter_lines(path: str | Path) -> list[tuple[int, Any]]:
    """``(line number, action name or id)`` of every non-blank line."""
    import json

    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if isinstance(value, dict):
            value = value.get("action")
        if not isinstance(value, (int, str)):
            raise DataError(f'{path}:{number}: expected an action name, an id, or {{"action": ...}}, got {line.strip()!r}')
        rows.append((number, value))
    return rows


def load_scene(spec: str, frames_wanted: int, model) -> tuple[np.ndarray, np.ndarray]:
    """``crafter:SEED`` or an mp4 path -> (frames ``uint8[T, H, W, 3]``, compact actions ``[T - 1, ...]``)."""
    from worldmodels.actions import get_domain

    domain = get_domain(model.spec.domain)
    h, w = model.spec.frame_size
    if spec.startswith("crafter:"):
        if domain.name != "crafter":
            raise ConfigError(f"scene {spec!r} needs a Crafter model; this one speaks {domain.name!r}")
        from rlir_env.crafter.scenes import crafter_scene

        scene = crafter_scene(int(spec.split(":", 1)[1]), size=(h, w), context_frames=frames_wanted)
        return scene.frames, scene.actions
    from worldmodels.actions import minecraft
    from worldmodels.data.jsonl import read_jsonl
    from worldmodels.data.video import read_video

    frames = read_video(spec, expected_size=(h, w))[:frames_wanted]
    if len(frames) < frames_wanted:
        raise DataError(f"scene {spec} has {len(frames)} frames, fewer than --scene-frames {frames_wanted}")
    actions = np.zeros((0, *domain.compact_shape), dtype=np.int64)
    if frames_wanted > 1:
        lines = read_jsonl(Path(spec).with_suffix(".jsonl"))[: frames_wanted - 1]
        actions = minecraft.to_compact([minecraft.validate_env_action(line) for line in lines])
    return frames, actions


def run(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console

    from rlir_env.env import WorldModelEnv
    from worldmodels.data.video import write_video
    from worldmodels.registry import load_world_model
    from worldmodels.runtime.progress import Progress

    model = load_world_model(args.checkpoint, config=args.config, vae_config=args.vae_config, device=args.device)
    frames, context_actions = load_scene(args.scene, args.scene_frames, model)
    script = read_action_script(args.actions, model.spec.domain)
    env = WorldModelEnv(model=model, decoding=args.decoding, top_p=args.top_p, temperature=args.temperature)
    obs, _ = env.reset(seed=args.seed, options={"frames": frames, "actions": context_actions})
    video = [obs]
    begin = time.perf_counter()
    with Progress(len(script), "generating", transient=True, rate_unit="frames") as bar:
        for action in script:
            obs, *_ = env.step(action)
            video.append(obs)
            bar.advance()
    seconds = time.perf_counter() - begin
    write_video(args.out, np.stack(video), fps=args.fps or model.spec.fps)
    Console().print(f"{len(script)} frames in {seconds:.2f} s ({len(script) / seconds:.2f} frames/s) -> {args.out}")
    return 0
