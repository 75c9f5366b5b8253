"""Training-free KV-cache rescheduling: garment and prompt switches in mid-stream (FashionChameleon section 3.3).

A garment switch happens at a chunk boundary and is three independent operations on the cache
``<KV_ref, KV_garment, KV_sink, FIFO history>``:

- **Garment KV refresh** -- the garment segment gets the new garment's keys: ``[reference, new garment]`` run once
  at t = 0 (positions 0 and 1, attending to each other, as a fresh prefill), and only the garment slot is stored.
- **Historical KV withdraw** -- the history window is dropped, because the model attends to history more than to
  the conditions and the old garment would otherwise persist. ``withdraw_sink`` (default True, as the paper's
  framework figure crosses out the sink slot too) also drops the sink; the next chunk then forms a new sink.
- **Reference KV disentangle** -- the reference region gets the keys of the *last generated frame* as the stream
  shows it: the last pixel frame of the continuous decode (the session loop hands over the frame it already
  decoded; otherwise the whole stream is decoded with carried VAE state) is re-encoded as a one-frame latent, and
  ``[that frame, garment]`` is prefilled storing only the reference slot. It keeps identity, pose and background
  continuous across the cut.

Choices the paper leaves open, made here and tested: the new reference sits at RoPE frame 0 (the slot's meaning in
training); frame numbering and video positions continue unchanged across a switch (keys are absolute and never
re-indexed); when refresh and disentangle are both on, the new pair is prefilled together.

A prompt switch (:func:`switch_prompt`) re-caches as LongLive does: fresh cross-attention K/V, then the conditions
and every frame still in the cache are recomputed under the new prompt, chunk by chunk in time order at their own
positions and t = 0, each attending to what precedes it.
"""

from __future__ import annotations

import logging
from typing import Protocol

import torch

from .cache import Region
from .causal import chunk_forward, prefill_conditions
from .config import COND_FRAMES
from .decoding import ChunkDecoderVAE, last_pixel_frame
from .latents import LatentFamily
from .model import TextContext
from .streaming import StreamState, cached_frames, check_finite_inputs

logger = logging.getLogger(__name__)


class FrameCodec(ChunkDecoderVAE, Protocol):
    """What disentangle needs from a VAE (the core's, or an adapter over ComfyUI's): streaming decode and a
    single-image encode."""

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Image ``[B, 3, H, W]`` in [-1, 1] -> raw one-frame latent ``[B, C, 1, h, w]``."""
        ...


def reference_from_frame(codec: FrameCodec, family: LatentFamily, frame: torch.Tensor) -> torch.Tensor:
    """Re-encode a pixel frame ``[B, 3, H, W]`` in [-1, 1] as a model-space one-frame latent ``[B, C, 1, h, w]``."""
    raw = codec.encode_image(frame.clamp(-1, 1))  # [B, C, 1, h, w]
    return family.to_model_space(raw.float())


@torch.no_grad()
def switch_garment(
    state: StreamState,
    garment: torch.Tensor | None = None,
    *,
    refresh: bool = True,
    withdraw: bool = True,
    disentangle: bool = True,
    withdraw_sink: bool = True,
    codec: FrameCodec | None = None,
    last_frame: torch.Tensor | None = None,
    new_reference: torch.Tensor | None = None,
) -> StreamState:
    """Switch the garment at the current chunk boundary; returns a new state (``state`` is unchanged).

    garment: model-space one-frame latent ``[B, C, 1, h, w]`` of the new garment (required with ``refresh``).
    Disentangle takes, in this order: ``new_reference`` (a model-space one-frame latent, used as is);
    ``last_frame`` (the stream's last pixel frame ``[B, 3, H, W]`` as the continuous decode showed it) re-encoded by
    ``codec``; or, with only ``codec``, the last frame of a continuous decode of the whole stream (exact, and its
    cost grows with the stream's length). With all three flags off the state is returned as is.
    """
    if not (refresh or withdraw or disentangle):
        return state
    model = state.model
    device = model.device
    if refresh:
        if garment is None:
            raise ValueError("refresh=True needs the new garment latent; pass garment=... or set refresh=False")
        if not isinstance(garment, torch.Tensor) or not garment.is_floating_point():
            raise ValueError(f"the new garment must be a floating-point latent [B, C, 1, h, w], got {garment!r:.80}")
        if garment.shape != state.garment.shape:
            raise ValueError(
                f"new garment latent has shape {tuple(garment.shape)} but the stream uses {tuple(state.garment.shape)}; "
                "encode the garment with the same VAE at the stream's resolution"
            )
    check_finite_inputs(**{"new garment": garment if refresh else None, "last_frame": last_frame,
                           "new_reference": new_reference})
    reference = state.reference
    if disentangle:
        if new_reference is None:
            if state.frames == 0:
                raise ValueError(
                    "disentangle needs a generated frame to take the new reference from, but the stream has none yet; "
                    "generate at least one chunk first or set disentangle=False"
                )
            if codec is None:
                raise ValueError("disentangle=True needs a VAE (codec=...) to decode and re-encode the last frame")
            family = model.config.latent
            if last_frame is None:
                if not state.history_complete:
                    raise ValueError(
                        "disentangle without last_frame decodes the whole stream to find its last frame, but this "
                        "stream keeps only recent latents (StreamSettings(keep_history=False)); pass last_frame= (the "
                        "last decoded frame [B, 3, H, W], as the session loop does) or new_reference=, or start the "
                        "stream with keep_history=True"
                    )
                last_frame = last_pixel_frame(codec, family, state.latents(), state.settings.chunk_frames)
            new_reference = reference_from_frame(codec, family, last_frame.to(codec.device, codec.dtype))
        if new_reference.shape != state.reference.shape:
            raise ValueError(
                f"new reference latent has shape {tuple(new_reference.shape)}, expected {tuple(state.reference.shape)}"
            )
        reference = new_reference.to(device, torch.float32)
    new_garment = garment.to(device, torch.float32) if refresh else state.garment

    cache = state.private_cache()
    if refresh or disentangle:
        prefill_conditions(model, cache, state.text, reference, new_garment, store=(disentangle, refresh))
    if withdraw:
        cache.clear(Region.WINDOW, *((Region.SINK,) if withdraw_sink else ()))
    logger.info(
        "garment switch at latent frame %d: refresh=%s withdraw=%s (sink %s) disentangle=%s",
        state.frames, refresh, withdraw, "dropped" if withdraw and withdraw_sink else "kept", disentangle,
    )
    return state.with_cache(cache, reference=reference, garment=new_garment, switches=state.switches + 1)


@torch.no_grad()
def switch_prompt(state: StreamState, context: torch.Tensor | TextContext) -> StreamState:
    """Switch the prompt: new cross-attention K/V and the cached frames re-encoded under it (LongLive's re-cache)."""
    model = state.model
    if not isinstance(context, TextContext):
        if not isinstance(context, torch.Tensor) or not context.is_floating_point():
            raise ValueError(f"the new prompt must be floating-point features [B, L, text_dim], got {context!r:.80}")
        check_finite_inputs(**{"new prompt": context})
    groups = cached_frames(state)
    # Every frame to re-cache must still be held (with keep_history=False the state keeps exactly these).
    held = [state.held_latents([p - COND_FRAMES for p in positions]) for _, positions in groups]
    text = context if isinstance(context, TextContext) else model.prepare_text(context)
    cache = state.private_cache()
    prefill_conditions(model, cache, text, state.reference, state.garment)
    b = state.reference.shape[0]
    for (slots, _), latents in zip(groups, held):
        x = latents.to(model.device)
        chunk_forward(model, cache, text, x, torch.zeros(b, device=model.device), slots,
                      local_frames=state.local_frames)
    logger.info("prompt switch at latent frame %d: re-cached %d chunks", state.frames, len(groups))
    return state.with_cache(cache, text=text, switches=state.switches + 1)
