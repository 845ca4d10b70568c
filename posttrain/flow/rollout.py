"""Group rollouts of an NFD world model with Flow-GRPO's SDE sampler, and the replay of their trained steps.

**Rollout** (:func:`flow_rollout`), per prompt ``p`` (context frames, their actions, ``F`` commanded actions):

1. the context is encoded, context-noised and prefilled into one cache slot, then copied to the group's ``G`` slots
   (one prefill per prompt; the context noise is the prompt's, shared by the group);
2. every frame is denoised over the grid ``1 = t_0 > ... > t_N = 0``: steps ``0 .. N-2`` are SDE steps
   (:func:`posttrain.flow.sde.sde_step`), the final step to ``t = 0`` is the deterministic Euler step
   (``x0 = x - t v``; never trained, so it only keeps SDE noise out of the output frames). Each frame's initial noise
   ``x_1`` is the same for the whole group by default (``same_noise``: Flow-GRPO's ``same_latent``, DanceGRPO's
   ``init_same_noise``), so a group's variance comes from the SDE noise;
3. per frame, a random ``fraction`` of the non-final steps is selected for training
   (:func:`posttrain.flow.sde.select_train_steps`, from the member's own seed) and stored: the step's input ``x_t``,
   its sample ``x_s``, ``t``, ``s`` and the sampler's log-probability; the window every frame was generated in (its
   first frame index) and every frame's context-noised latent as it entered the cache.

Every random draw comes from generators seeded by ``(seed, stream, iteration, prompt key, member)``
(:func:`posttrain.data.member_generator`), so a rollout does not depend on its batch.

**Replay** (:func:`replay_logprobs`): for each window, one packed transformer forward per micro-batch holds the
window's clean frames (as they entered the cache: latents, ``t_ctx``, actions, the first frame without an action) and,
next to them, one block per selected step of every frame generated in that window, at that frame's position. The
frame mask lets clean frames attend block-causally to clean frames, and a step block to the clean frames before its
frame and to itself - exactly what the cached rollout computed, without the cache and with gradients. The trainer
takes its old log-probs from this replay (so the first update's ratio is exactly 1) and logs the gap to the
sampler's log-probs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from posttrain.flow.sde import gaussian_logprob, sde_step, select_train_steps
from posttrain.data import ROLLOUT_STREAM, Prompts, member_generator
from worldmodels.errors import ConfigError
from worldmodels.nfd.sampling import time_grid

SELECT_STREAM = 111
"""Seed-sequence stream of the trained-step selection."""
SHARED_NOISE_STREAM = 112
"""Seed-sequence stream of a group's shared noise (context noise and, with ``same_noise``, each frame's ``x_1``)."""


@dataclass(frozen=True)
class FlowSampling:
    """The rollout's SDE sampler.

    Args:
        steps: denoising steps per frame (RLIR: 10).
        noise_level: ``a`` in ``sigma_t = a sqrt(t / (1 - t))`` (RLIR: 0.75).
        shift: SD3 time shift of the grid.
        fraction: share of the ``steps - 1`` non-final steps trained per frame (RLIR's timestep selection: 0.6).
        same_noise: one initial noise per frame for the whole group.
        sde_type: ``"flow"`` (Flow-GRPO) or ``"dance"`` (constant ``sigma_t = a``).
    """

    steps: int = 10
    noise_level: float = 0.75
    shift: float = 1.0
    fraction: float = 0.6
    same_noise: bool = True
    sde_type: str = "flow"

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 2:
            raise ConfigError(f"Flow-GRPO needs steps >= 2 (one trainable SDE step), got {self.steps!r}")
        if not self.noise_level > 0:
            raise ConfigError(f"noise_level must be > 0, got {self.noise_level!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction must lie in (0, 1], got {self.fraction!r}")
        if self.sde_type not in ("flow", "dance"):
            raise ConfigError(f"sde_type must be 'flow' or 'dance', got {self.sde_type!r}")
        if not self.shift > 0:
            raise ConfigError(f"shift must be > 0, got {self.shift!r}")

    @property
    def times(self) -> list[float]:
        return time_grid(self.steps, self.shift)

    @property
    def steps_per_frame(self) -> int:
        """Trained steps per frame: ``max(1, int(fraction * (steps - 1)))``."""
        return max(1, int(self.fraction * (self.steps - 1)))


@dataclass
class FlowRolloutBatch:
    """``P`` prompts x ``G`` rollouts; sample ``s`` is member ``s % G`` of prompt ``s // G``. Tensors on the CPU.

    Frame indices count a sample's frames: ``0 .. C-1`` the context, ``C .. C+F-1`` the generated frames.
    """

    items: np.ndarray
    keys: np.ndarray
    group_size: int
    actions: np.ndarray
    """``int64[P, F, *A]`` the commanded compact actions."""
    frame_latents: torch.Tensor
    """``float32[S, C + F, ch, h, w]`` every frame's context-noised latent as it entered the cache."""
    frame_actions: torch.Tensor
    """``int64[S, C + F, *A]`` the action that led to each frame (0 for the first context frame)."""
    window_start: np.ndarray
    """``int64[F]`` the first frame of the window generated frame ``k`` was sampled in."""
    latents: torch.Tensor
    """``float32[S, F, ch, h, w]`` the generated frames' clean latents."""
    step_index: torch.Tensor
    """``int64[S, F, K]`` the trained denoising steps of each frame."""
    x: torch.Tensor
    """``float32[S, F, K, ch, h, w]`` the inputs ``x_t`` of the trained steps."""
    x_next: torch.Tensor
    """``float32[S, F, K, ch, h, w]`` their samples ``x_s``."""
    t: torch.Tensor
    """``float32[S, F, K]`` their times ``t``."""
    s: torch.Tensor
    """``float32[S, F, K]`` their next times ``s``."""
    sampler_logprobs: torch.Tensor
    """``float32[S, F, K]`` their log-probabilities under the rollout's (KV-cached) forward."""
    sampling: FlowSampling
    context_noise: float
    seconds: float = 0.0

    @property
    def n_samples(self) -> int:
        return int(self.frame_latents.shape[0])

    @property
    def n_context(self) -> int:
        return int(self.frame_latents.shape[1] - self.latents.shape[1])

    @property
    def n_frames(self) -> int:
        return int(self.latents.shape[1])


@torch.no_grad()
def flow_rollout(
    model,
    prompts: Prompts,
    *,
    group_size: int,
    sampling: FlowSampling,
    seed: int,
    iteration: int,
    stream: int = ROLLOUT_STREAM,
    prompts_per_state: int | None = None,
) -> FlowRolloutBatch:
    """Sample ``group_size`` SDE rollouts of every prompt with an ``NFD`` model (see the module docstring), through
    its public hooks (:class:`worldmodels.protocol.DiffusionModel`)."""
    if group_size < 1:
        raise ConfigError(f"group_size must be >= 1, got {group_size}")
    per_state = len(prompts) if prompts_per_state is None else int(prompts_per_state)
    if per_state < 1:
        raise ConfigError(f"prompts_per_state must be >= 1, got {prompts_per_state}")
    device = model.device
    times = sampling.times
    n_steps = sampling.steps
    n_context, n_frames = int(prompts.context_frames.shape[1]), prompts.n_frames
    started = time.perf_counter()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("frame_latents", "frame_actions", "latents", "step_index",
                                                            "x", "x_next", "t", "s", "logp")}  # fmt: skip
    window_start: np.ndarray | None = None
    for begin in range(0, len(prompts), per_state):
        keys = prompts.keys[begin : begin + per_state]
        n = len(keys)
        rows = n * group_size
        members = [member_generator(seed, iteration, int(p), g, stream=stream, device=device.type)
                   for p in keys for g in range(group_size)]  # fmt: skip
        shared = [member_generator(seed, iteration, int(p), 0, stream=SHARED_NOISE_STREAM, device=device.type)
                  for p in keys]  # fmt: skip
        selectors = [member_generator(seed, iteration, int(p), g, stream=SELECT_STREAM) for p in keys
                     for g in range(group_size)]  # fmt: skip
        # the group's context noise comes from the prompt's shared generator, so the whole group starts alike
        context = torch.as_tensor(prompts.context_frames[begin : begin + n])
        state = model.start_group(context, prompts.context_actions[begin : begin + n], members, group_size=group_size,
                                  context_generators=shared)  # fmt: skip
        chosen = torch.stack([select_train_steps(sel, n_steps, sampling.fraction, n_frames) for sel in selectors])
        # every frame as it entered the cache: the context now (a copy: windows are rewritten when slots slide)
        history = list(model.window_latents(state)[:, :n_context].float().cpu().unbind(1))
        commanded = prompts.actions[begin : begin + n]
        per_frame: dict[str, list[torch.Tensor]] = {k: [] for k in ("latents", "x", "x_next", "t", "s", "logp")}
        starts = []
        for k in range(n_frames):
            model.begin_frame(state, np.repeat(commanded[:, k], group_size, axis=0))
            lengths = model.window_lengths(state)
            if not (lengths == lengths[0]).all():
                raise RuntimeError(f"slots of one rollout state hold windows of different lengths {lengths}")
            starts.append(n_context + k - int(lengths[0]))
            if sampling.same_noise:
                x = torch.stack([torch.randn(model.latent_shape, generator=g, device=g.device) for g in shared])
                x = x.to(device).repeat_interleave(group_size, 0)
            else:
                x = model.draw_noise(state)
            inputs, samples, logps = [], [], []
            for i in range(n_steps):
                v = model.velocity(state, x, times[i])
                if i == n_steps - 1:  # the final step to t = 0: deterministic, never trained
                    x_next = x - times[i] * v
                else:
                    mean, std = sde_step(x, v, torch.tensor(times[i]), torch.tensor(times[i + 1]), t_first=times[1],
                                         noise_level=sampling.noise_level, sde_type=sampling.sde_type)  # fmt: skip
                    eps = model.draw_noise(state)  # one draw per slot, from the slot's own generator
                    x_next = mean + std * eps
                    inputs.append(x.float().cpu())
                    samples.append(x_next.float().cpu())
                    logps.append(gaussian_logprob(x_next, mean, std).cpu())
                x = x_next
            stored = model.end_frame(state, x)
            history.append(stored.float().cpu())
            pick = chosen[:, k]  # [rows, K]
            gather = lambda seq: torch.stack(seq, 1)[torch.arange(rows)[:, None], pick]  # noqa: E731
            per_frame["latents"].append(x.float().cpu())
            per_frame["x"].append(gather(inputs))
            per_frame["x_next"].append(gather(samples))
            per_frame["logp"].append(gather(logps))
            per_frame["t"].append(torch.tensor(times[:-1], dtype=torch.float32)[pick])
            per_frame["s"].append(torch.tensor(times[1:], dtype=torch.float32)[pick])
        if window_start is None:
            window_start = np.array(starts, dtype=np.int64)
        elif window_start.tolist() != starts:
            raise RuntimeError("rollout states slid at different frames; pass prompts with equal context lengths")
        all_actions = np.concatenate([prompts.context_actions[begin : begin + n], commanded], axis=1)
        actions = torch.as_tensor(np.repeat(all_actions, group_size, axis=0), dtype=torch.long)
        parts["frame_actions"].append(torch.cat([torch.zeros_like(actions[:, :1]), actions], dim=1))
        parts["frame_latents"].append(torch.stack(history, 1))
        parts["step_index"].append(chosen)
        for key in ("latents", "x", "x_next", "t", "s", "logp"):
            parts[key].append(torch.stack(per_frame[key], 1))
    cat = {k: torch.cat(v) for k, v in parts.items()}
    return FlowRolloutBatch(
        items=np.asarray(prompts.items, dtype=np.int64), keys=np.asarray(prompts.keys, dtype=np.int64),
        group_size=group_size, actions=np.asarray(prompts.actions), frame_latents=cat["frame_latents"],
        frame_actions=cat["frame_actions"], window_start=window_start, latents=cat["latents"],
        step_index=cat["step_index"], x=cat["x"], x_next=cat["x_next"], t=cat["t"], s=cat["s"],
        sampler_logprobs=cat["logp"], sampling=sampling, context_noise=float(model.config.context_noise),
        seconds=time.perf_counter() - started,
    )  # fmt: skip


@torch.no_grad()
def decode_videos(model, batch: FlowRolloutBatch, prompts: Prompts, *, chunk: int = 64) -> np.ndarray:
    """What the reward sees: ``uint8[S, F + 1, H, W, 3]``, each sample's last real context frame followed by its
    ``F`` generated frames."""
    flat = batch.latents.flatten(0, 1)
    frames = [model.decode(flat[i : i + chunk].to(model.device)).cpu() for i in range(0, len(flat), chunk)]
    generated = torch.cat(frames).numpy().reshape(batch.n_samples, batch.n_frames, *frames[0].shape[1:])
    context = np.repeat(prompts.context_frames[:, -1:], batch.group_size, axis=0)
    return np.concatenate([context, generated], axis=1)


def _windows(batch: FlowRolloutBatch) -> list[tuple[int, list[int]]]:
    """``(window start, generated frames sampled in it)`` in order."""
    out: list[tuple[int, list[int]]] = []
    for k, start in enumerate(batch.window_start.tolist()):
        if out and out[-1][0] == start:
            out[-1][1].append(k)
        else:
            out.append((start, [k]))
    return out


def replay_logprobs(
    transformer: torch.nn.Module,
    batch: FlowRolloutBatch,
    samples: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probabilities of the trained steps of ``samples`` (``int64[m]``) under ``transformer`` (with gradients
    unless called under ``no_grad``): ``(logp [m, F, K], mean [m, F, K, ch, h, w], std [m, F, K, 1, 1, 1])``."""
    sampling = batch.sampling
    times = sampling.times
    n_context = batch.n_context
    k_steps = batch.step_index.shape[2]
    samples = samples.cpu()
    logps, means, stds = [], [], []
    frame_index: list[int] = []
    for start, frames in _windows(batch):
        clean_end = n_context + frames[-1]  # clean frames start .. clean_end - 1
        n_clean = clean_end - start
        positions = list(range(n_clean)) + [n_context + k - start for k in frames for _ in range(k_steps)]
        n_blocks = len(positions)
        pos = torch.tensor(positions)
        is_clean = torch.arange(n_blocks) < n_clean
        mask = (pos[None, :] <= pos[:, None]) & is_clean[None, :] & is_clean[:, None]
        mask |= (~is_clean[:, None]) & is_clean[None, :] & (pos[None, :] < pos[:, None])
        mask |= torch.eye(n_blocks, dtype=torch.bool)
        noisy_x = batch.x[samples][:, frames].flatten(1, 2)  # [m, len(frames) * K, ...]
        z = torch.cat([batch.frame_latents[samples, start:clean_end], noisy_x], dim=1)
        t_noisy = batch.t[samples][:, frames].flatten(1, 2)
        t = torch.cat([torch.full((len(samples), n_clean), batch.context_noise), t_noisy], dim=1)
        new_actions = batch.frame_actions[samples][:, [n_context + k for k in frames]].repeat_interleave(k_steps, 1)
        actions = torch.cat([batch.frame_actions[samples, start:clean_end], new_actions], dim=1)
        present = torch.ones(len(samples), n_blocks, dtype=torch.bool)
        present[:, 0] = False
        v = transformer(z.to(device), t.to(device), actions.to(device), present.to(device),
                        frame_positions=pos.to(device), frame_mask=mask.to(device))[:, n_clean:]  # fmt: skip
        s_noisy = batch.s[samples][:, frames].flatten(1, 2)
        mean, std = sde_step(noisy_x.to(device).flatten(0, 1), v.flatten(0, 1), t_noisy.flatten().to(device),
                             s_noisy.flatten().to(device), t_first=times[1], noise_level=sampling.noise_level,
                             sde_type=sampling.sde_type)  # fmt: skip
        x_next = batch.x_next[samples][:, frames].flatten(0, 2).to(device)
        logp = gaussian_logprob(x_next, mean, std)
        shape = (len(samples), len(frames), k_steps)
        logps.append(logp.view(shape))
        means.append(mean.view(*shape, *mean.shape[1:]))
        stds.append(std.view(*shape, *std.shape[1:]))
        frame_index += frames
    order = torch.as_tensor(np.argsort(frame_index), device=logps[0].device)
    return (torch.cat(logps, 1)[:, order], torch.cat(means, 1)[:, order], torch.cat(stds, 1)[:, order])
