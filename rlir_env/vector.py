"""``WorldModelVectorEnv``: a natively batched Gymnasium vector env over one world model.

One model, one device, ``num_envs`` environment slots decoded together: the batch is where a world model's RL
throughput comes from. Each slot has its own numpy and torch generators, seeded at ``reset(seed=...)``
(env ``i`` gets ``seed + i``, as in Gymnasium's ``SyncVectorEnv``), so a rollout is reproducible on the same device and
independent of what the other slots do.

Actions are the domain's compact form (``MultiDiscrete([21, 21, 10, 3, 3, 3, 3, 2, 3])`` for Minecraft,
``Discrete(17)`` for Crafter); wrappers in :mod:`rlir_env.wrappers` offer MineRL dicts and named presets.
A video world model has no reward or termination of its own: rewards are 0 and ``terminated`` is False unless
wrappers add them; ``truncated`` comes from ``max_episode_steps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlir_env.scenes import Scene, SceneSource, resolve_scenes
from worldmodels.actions import get_domain
from worldmodels.errors import ConfigError, FrameError
from worldmodels.protocol import AutoregressiveModel, DiffusionModel, WorldModel
from worldmodels.registry import REGISTRY


class WorldModelVectorEnv(VectorEnv):
    """Batched environments backed by one world model.

    Args:
        num_envs: number of environment slots decoded together.
        checkpoint: registry name (e.g. ``"mineworld-300m-16f"``, ``"crafter-ar-small"``) or a checkpoint path.
        model: an already built :class:`~worldmodels.protocol.WorldModel` (instead of ``checkpoint``).
        config, vae_config: official-format config files for official checkpoints.
        device, dtype: where and in which precision the model runs (fp32 on CPU).
        compile: decode through the compiled static step (``torch.compile``; autoregressive models loaded from
            ``checkpoint``): the same tokens as eager, faster once compiled (the first step of a batch size compiles,
            seconds to a minute on a CPU; docs/benchmarks.md).
        decoding, window, temperature, top_p, top_k: sampling settings of autoregressive (MineWorld) models; None
            keeps the model's default (the sampling its file stores, e.g. top-p 0.9 for the bundled
            ``crafter-mineworld``; else naive decoding at temperature 1 without truncation). A ``top_p`` or ``top_k``
            replaces the default's truncation; ``top_p=1`` samples from the whole distribution.
        sampler, sampling_steps: sampling settings of NFD (diffusion) models: ``"euler"`` or ``"dpm-solver++"`` and
            denoising steps per frame (None: the checkpoint's stored setting). Options of the other family are
            refused, never ignored.
        context_frames: frames kept in the model's context when its window slides (model default if None).
        scene_frames: real frames in each start scene drawn from ``scenes``.
        obs_size: refused: observations come at the model's native size; resize with the
            :class:`~rlir_env.wrappers.VectorResizeFrames` / :class:`~rlir_env.wrappers.ResizeFrames` wrappers.
        max_episode_steps: truncate episodes after this many steps (None: never).
        scenes: source of start scenes (see :func:`rlir_env.scenes.resolve_scenes`).
        autoreset_mode: Gymnasium autoreset mode, ``NEXT_STEP`` (default) or ``SAME_STEP``.
        render_mode: ``"rgb_array"`` or None.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        checkpoint: str | None = None,
        model: WorldModel | None = None,
        config: str | None = None,
        vae_config: str | None = None,
        device: str = "cpu",
        dtype: str | torch.dtype = "float32",
        compile: bool = False,
        decoding: str | None = None,
        window: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        sampler: str | None = None,
        sampling_steps: int | None = None,
        context_frames: int | None = None,
        scene_frames: int = 1,
        obs_size: tuple[int, int] | None = None,
        max_episode_steps: int | None = None,
        scenes: object = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
    ):
        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
        if model is not None and checkpoint is not None:
            raise ConfigError("pass exactly one of checkpoint= (a registry name or a path) or model= (a built model)")
        if model is None and checkpoint is None:  # e.g. gym.make("RLIR-NFD-v0"), which has no default model

            raise ConfigError(
                "no world model given: pass checkpoint= (a registered name: " + ", ".join(sorted(REGISTRY)) + "; or "
                "a checkpoint file, e.g. the .safetensors `rlir train nfd` writes) or model= (a built WorldModel), "
                "e.g. gym.make('RLIR-NFD-v0', checkpoint='crafter-nfd')"
            )
        if obs_size is not None:
            raise ConfigError(
                f"obs_size={obs_size!r}: resizing is a wrapper; use rlir_env.ResizeFrames(env, {tuple(obs_size)!r}) "
                f"(or VectorResizeFrames for a vector env)"
            )
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ConfigError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        if self.autoreset_mode == AutoresetMode.DISABLED:
            raise ConfigError("autoreset_mode DISABLED is not supported; use NEXT_STEP or SAME_STEP")
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode={render_mode!r} is not supported by the vector env; use 'rgb_array'")
        if compile and model is not None:
            raise ConfigError("compile=True applies to models loaded from checkpoint=; build model= with compile=True")
        if model is None:
            from worldmodels.registry import load_world_model

            options = {"compile": True} if compile else {}
            model = load_world_model(
                checkpoint, config=config, vae_config=vae_config, device=device, dtype=as_torch_dtype(dtype), **options
            )
        self.model = model
        requested = dict(decoding=decoding, window=window, temperature=temperature, top_p=top_p, top_k=top_k)
        self.nfd_sampling = _nfd_sampling(model, requested, sampler, sampling_steps)
        self.token_sampling = model.token_sampling(**requested) if isinstance(model, AutoregressiveModel) else None
        self.sampling = requested if self.token_sampling is None else {
            name: getattr(self.token_sampling, name) for name in requested}  # fmt: skip
        """The autoregressive settings the env samples with (the model's defaults filled in)."""
        self.context_frames = context_frames
        self.spec_model = model.spec
        self.domain = get_domain(model.spec.domain)
        self.device = _model_device(model)

        self.num_envs = num_envs
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        self.frame_size = tuple(model.spec.frame_size)
        self.metadata = dict(self.metadata, autoreset_mode=self.autoreset_mode, render_fps=model.spec.fps)
        self.single_observation_space = gym.spaces.Box(0, 255, (*self.frame_size, 3), dtype=np.uint8)
        self.single_action_space = self.domain.compact_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.scene_source: SceneSource | None = resolve_scenes(
            scenes, domain=self.domain, frame_size=self.frame_size, context_frames=scene_frames
        )

        self._state: Any = None
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._generators = [torch.Generator(device=self.device) for _ in range(num_envs)]
        self._episode_steps = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._frames: torch.Tensor | None = None  # latest native frames, uint8[B, H, W, 3]

    # -- reset -------------------------------------------------------------------------------------------------------

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all envs (or those in ``options["reset_mask"]``).

        ``options`` may carry a start scene for every env being reset: ``frames`` (``uint8[T, H, W, 3]`` shared, or
        ``uint8[n, T, H, W, 3]`` one per env being reset) and ``actions`` (the ``T - 1`` compact actions between
        them, same batching). Without it, scenes come from the ``scenes`` source.
        """
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            ids = np.arange(self.num_envs)
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
                raise ConfigError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) with a True")
            if self._state is None:
                raise ConfigError("the first reset must reset every env (no reset_mask)")
            ids = np.flatnonzero(mask)
        seeds = self._expand_seeds(seed, len(ids))
        if seed is not None or self._np_random is None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed if isinstance(seed, int) else None)
        self._reset_envs(ids, seeds, options)
        return self._observations(), {}

    def _expand_seeds(self, seed: int | Sequence[int | None] | None, n: int) -> list[int | None]:
        if seed is None:
            return [None] * n
        if isinstance(seed, (int, np.integer)):
            return [int(seed) + i for i in range(n)]
        seeds = list(seed)
        if len(seeds) != n:
            raise ConfigError(f"got {len(seeds)} seeds for {n} environments being reset")
        return seeds

    def _reset_envs(self, ids: np.ndarray, seeds: Sequence[int | None], options: dict[str, Any]) -> None:
        for env_id, seed in zip(ids, seeds):
            if seed is not None or self._rngs[env_id] is None:
                self._rngs[env_id] = np.random.default_rng(seed)
            self._generators[env_id].manual_seed(int(self._rngs[env_id].integers(2**63 - 1)))
        scenes = self._scenes_for(ids, options)
        by_length: dict[int, list[int]] = {}
        for k, scene in enumerate(scenes):
            by_length.setdefault(len(scene.frames), []).append(k)
        for group in by_length.values():
            env_ids = [int(ids[k]) for k in group]
            frames = torch.as_tensor(np.stack([scenes[k].frames for k in group]), device=self.device)
            actions = np.stack([scenes[k].actions for k in group])  # validated by _check_scene; the model encodes them
            generators = [self._generators[i] for i in env_ids]
            if self._state is None and len(env_ids) == self.num_envs and env_ids == list(range(self.num_envs)):
                self._state = self.model.start(frames, actions, generators, **self._start_kwargs())
                self._frames = frames[:, -1].clone()
            else:
                if self._state is None:  # first reset with scenes of different lengths: start from the first group
                    raise ConfigError("the first reset needs start scenes of equal length for every env")
                self.model.reset_slots(self._state, env_ids, frames, actions, generators)
                self._frames[env_ids] = frames[:, -1]
        self._episode_steps[ids] = 0
        self._autoreset[ids] = False

    def _start_kwargs(self) -> dict[str, Any]:
        """Model-specific start options built from the env's sampling kwargs."""
        kwargs: dict[str, Any] = {}
        if isinstance(self.model, AutoregressiveModel):
            kwargs["sampling"] = self.token_sampling
        elif self.nfd_sampling is not None:
            kwargs["sampling"] = self.nfd_sampling
        if self.context_frames is not None:
            kwargs["reference_frames"] = self.context_frames
        return kwargs

    def _scenes_for(self, ids: np.ndarray, options: dict[str, Any]) -> list[Scene]:
        unknown = set(options) - {"frames", "actions"}
        if unknown:
            raise ConfigError(f"unknown reset options {sorted(unknown)}; supported: frames, actions, reset_mask")
        if "frames" in options:
            frames = np.asarray(options["frames"])
            per_env = frames.ndim == 5
            actions = options.get("actions")
            scenes = []
            for k in range(len(ids)):
                f = frames[k] if per_env else frames
                a = None if actions is None else (np.asarray(actions)[k] if per_env else np.asarray(actions))
                scenes.append(self._check_scene(f, a))
            if per_env and len(frames) != len(ids):
                raise FrameError(f"options['frames'] holds {len(frames)} scenes for {len(ids)} environments being reset")
            return scenes
        if self.scene_source is None:
            raise ConfigError(
                "no start scene: pass reset(options={'frames': uint8[T, H, W, 3], 'actions': [T - 1 actions]}) or "
                "create the env with scenes=... (a list of Scene, a clip directory, or 'crafter' for Crafter models)"
            )
        return [self._check_scene(*_scene_tuple(self.scene_source.sample(self._rngs[i]))) for i in ids]

    def _check_scene(self, frames: np.ndarray, actions: Any) -> Scene:
        frames = np.asarray(frames)
        h, w = self.frame_size
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (h, w, 3) or len(frames) < 1:
            raise FrameError(
                f"start frames must be uint8[T, {h}, {w}, 3] (the model's native size, RGB), got "
                f"{frames.dtype}{list(frames.shape)}; resize explicitly before passing them"
            )
        n_actions = len(frames) - 1
        if actions is None:
            if n_actions:
                raise ConfigError(f"{len(frames)} start frames need {n_actions} actions between them")
            actions = np.zeros((0, *self.domain.compact_shape), dtype=np.int64)
        actions = self.domain.validate(actions)
        if actions.shape != (n_actions, *self.domain.compact_shape):
            raise ConfigError(
                f"{len(frames)} start frames need actions of shape {(n_actions, *self.domain.compact_shape)}, "
                f"got {actions.shape}"
            )
        return Scene(frames=frames, actions=actions)

    # -- step --------------------------------------------------------------------------------------------------------

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._state is None:
            raise ConfigError("call reset() before step()")
        # the model validates the batch and turns it into tokens once, on its device (no hop through this one)
        self._frames = self.model.step(self._state, actions)
        self._episode_steps += 1
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        if self.max_episode_steps is not None:
            truncated = self._episode_steps >= self.max_episode_steps
        infos: dict[str, Any] = {}

        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            # Envs that ended last step start over now; the frame just generated for them is discarded.
            ids = np.flatnonzero(self._autoreset)
            if ids.size:
                self._reset_envs(ids, [None] * ids.size, {})
                truncated[ids] = False
            observations = self._observations()
            self._autoreset = terminated | truncated
        else:  # SAME_STEP
            observations = self._observations()
            ids = np.flatnonzero(terminated | truncated)
            if ids.size:
                final_obs = np.empty(self.num_envs, dtype=object)
                for i in ids:
                    final_obs[i] = observations[i].copy()
                done = np.zeros(self.num_envs, dtype=bool)
                done[ids] = True
                infos = {"final_obs": final_obs, "_final_obs": done, "final_info": {}, "_final_info": done}
                self._reset_envs(ids, [None] * ids.size, {})
                observations = self._observations()
        return observations, rewards, terminated, truncated, infos

    # -- rendering ---------------------------------------------------------------------------------------------------

    def _observations(self) -> np.ndarray:
        return self._frames.cpu().numpy().copy()  # users keep observations; later in-place resets must not change them

    def render(self) -> tuple[np.ndarray, ...] | None:
        """Native-size frames of every env (``rgb_array``), or None without a render mode."""
        if self.render_mode is None or self._frames is None:
            return None
        return tuple(self._frames.cpu().numpy())

    @property
    def decode_stats(self) -> Any:
        """The world model's decoding counters since the first reset (autoregressive models: forwards per frame and
        speculative acceptance, :class:`~worldmodels.mineworld.decoding.DecodeStats`); ``None`` before the first
        reset, after ``close`` and for models that keep none."""
        return getattr(self._state, "decode_stats", None)

    def close_extras(self, **kwargs: Any) -> None:
        self._state = None


def as_torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"`` / ``"fp16"`` / ``torch.bfloat16`` ... -> a torch floating dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}  # fmt: skip
    try:
        return names[str(dtype).removeprefix("torch.")]
    except KeyError:
        raise ConfigError(f"dtype {dtype!r} is not supported; use one of {sorted(names)}") from None


def _scene_tuple(scene: Scene) -> tuple[np.ndarray, np.ndarray | None]:
    return scene.frames, scene.actions


def _model_device(model: WorldModel) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for tensor in model.parameters():
            return tensor.device
    return torch.device(getattr(model, "device", "cpu"))


AUTOREGRESSIVE_DEFAULTS = {"decoding": "naive", "window": 2, "temperature": 1.0, "top_p": None, "top_k": None}
"""The autoregressive options and their values for a model that stores no default; given for an NFD model, these
values are tolerated (they were every caller's defaults) and any other is refused."""


def _nfd_sampling(model: WorldModel, autoregressive: dict[str, Any], sampler: str | None, steps: int | None):
    """The sampling settings a diffusion (NFD) model runs with (None for other models), after refusing options of
    the other model family. The family is a capability (:mod:`worldmodels.protocol`), not a class, so any model
    implementing the protocol gets the same options."""
    if isinstance(model, DiffusionModel):
        # None counts as unset: bundles of NFD models record no autoregressive settings
        given = [k for k, v in autoregressive.items() if v is not None and v != AUTOREGRESSIVE_DEFAULTS[k]]
        if given:
            raise ConfigError(
                f"{', '.join(f'{k}={autoregressive[k]!r}' for k in given)}: options of autoregressive (MineWorld) models; "
                f"{model.spec.name!r} is an NFD (diffusion) model: choose sampler ('euler' or 'dpm-solver++') and "
                "sampling_steps instead"
            )
        return model.denoising_sampling(sampler, steps)
    if sampler is not None or steps is not None:
        family = "autoregressive (MineWorld)" if isinstance(model, AutoregressiveModel) else type(model).__name__
        raise ConfigError(
            f"sampler={sampler!r}, sampling_steps={steps!r}: options of NFD (diffusion) models; {model.spec.name!r} is "
            f"{family}: use decoding, window, temperature, top_p, top_k instead"
        )
    return None
