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
training); when the withdraw leaves no video frame in the cache (window and sink dropped) the stream starts a **new
clip** (``new_clip``, default on; :attr:`~chameleon_core.streaming.StreamState.clip_starts`): nothing in the cache is
left to stay relative to, so the next chunk is denoised as a stream's first chunk is -- its RoPE positions start
again, and its first latent frame, as in every training clip, re-draws the reference (the last frame shown, now in
the new garment). The decode restarts there too, and that frame is decoded but not shown (as an image-to-video
continuation drops its input frame), so the motion continues with no held frame (:mod:`chameleon_core.frames`).
Measured on the synthetic world (docs/experiments/world.md): continuing the positions instead lost 0.13 of motion
agreement and raised the identity error across the switch, and continuing the decode (the new clip's first latent
shown as four frames) held the pose for a picture. With the sink or the window kept, positions and the decode
continue (kept keys are absolute and never re-indexed); latent frame numbering always continues. When refresh and
disentangle are both on, the new pair is prefilled together.

A prompt switch (:func:`switch_prompt`) re-caches as LongLive does: fresh cross-attention K/V, then the conditions
and every frame still in the cache are recomputed under the new prompt, chunk by chunk in time order at their own
positions and t = 0, each attending to what precedes it. The public students' profiles carry their own rule
(``StreamSettings.prompt_recache``): LongLive 1.0's ``window`` (one forward over the cached frames, which see each
other; the sink keeps its keys once the stream has outgrown the cache: ``_recache_after_switch`` of its
``pipeline/interactive_causal_inference.py``) and LongLive 2.0's ``none`` (the prompt changes from the next chunk
on; a ``new_shot`` also moves RoPE and pins that chunk as the shot sink). Streams without conditions have no
garment to switch.
"""

from __future__ import annotations

import logging
from typing import Protocol

import torch

from .cache import Region
from .causal import chunk_forward, prefill_conditions
from .decoding import ChunkDecoderVAE, StreamingDecoder
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
    new_clip: bool = True,
) -> StreamState:
    """Switch the garment at the current chunk boundary; returns a new state (``state`` is unchanged).

    garment: model-space one-frame latent ``[B, C, 1, h, w]`` of the new garment (required with ``refresh``).
    Disentangle takes, in this order: ``new_reference`` (a model-space one-frame latent, used as is);
    ``last_frame`` (the stream's last pixel frame ``[B, 3, H, W]`` as the continuous decode showed it) re-encoded by
    ``codec``; or, with only ``codec``, the last frame of a continuous decode of the whole stream (exact, and its
    cost grows with the stream's length). With all three flags off the state is returned as is.
    ``new_clip``: when the withdraw drops window and sink, a new clip starts: the next chunk's RoPE positions start
    again at the first chunk's and the decode restarts, its first latent frame not shown (False: positions and the
    decode continue).
    """
    if not state.settings.conditions:
        raise ValueError(
            "this stream has no garment to switch: it was started without reference and garment conditions (the "
            "profile of a public text-/image-to-video student). Switch its prompt instead, or stream a "
            "FashionChameleon student"
        )
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
            if state.latent_frames == 0:
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
                # The causal decoder's last frame depends on everything before it: decode from the first frame
                # (memory stays at one chunk). The session loop and the nodes hand over the frame they decoded.
                last_frame = StreamingDecoder(codec, family).warm_up(
                    state.latents(), state.settings.chunk_frames, clip_starts=state.clip_starts).last_frame
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
        state.latent_frames, refresh, withdraw, "dropped" if withdraw and withdraw_sink else "kept", disentangle,
    )
    # The cache holds no video frame any more: a new clip starts here (once per boundary; not at the stream's start)
    restart = withdraw and withdraw_sink and new_clip and state.latent_frames > 0
    clip_starts = (state.clip_starts if not restart or state.opens_clip
                   else state.clip_starts + (state.latent_frames,))
    return state.with_cache(cache, reference=reference, garment=new_garment, switches=state.switches + 1,
                            clip_starts=clip_starts)


@torch.no_grad()
def switch_prompt(state: StreamState, context: torch.Tensor | TextContext, *, new_shot: bool = False) -> StreamState:
    """Switch the prompt: new cross-attention K/V and the cached frames re-encoded under it by the stream's rule
    (``settings.prompt_recache``; FashionChameleon's is LongLive's re-cache, chunk by chunk).

    ``new_shot``: the switch starts a new shot (LongLive 2.0's scene cut): every later frame's RoPE position moves
    by ``settings.shot_rope_offset`` more, and with ``settings.shot_sink`` the next chunk is pinned beside the sink.
    Refused for a profile without shots. At frame 0 a new shot is only a new prompt (as LongLive 2.0 counts it).
    """
    model, settings = state.model, state.settings
    if not isinstance(context, TextContext):
        if not isinstance(context, torch.Tensor) or not context.is_floating_point():
            raise ValueError(f"the new prompt must be floating-point features [B, L, text_dim], got {context!r:.80}")
        check_finite_inputs(**{"new prompt": context})
    if new_shot and not (settings.shot_rope_offset or settings.shot_sink):
        raise ValueError("new_shot needs a stream whose profile has shots (LongLive 2.0: shot_rope_offset / "
                         "shot_sink); this stream's prompt switch is a plain switch, pass new_shot=False")
    rule = settings.prompt_recache
    groups = cached_frames(state) if rule != "none" and state.latent_frames else []
    cond = settings.cond_frames
    if rule == "window" and state.latent_frames > settings.cache_frames - cond:
        # LongLive 1.0 past its cache length: the sink keeps its keys, the window is re-encoded beside it.
        sink = set(state.geometry.region_slots(Region.SINK))
        groups = [g for g in groups if not set(g[0]) & sink]
    # Every frame to re-cache must still be held (with keep_history=False the state keeps exactly these).
    held = [state.held_latents([p - cond for p in positions]) for _, positions in groups]
    text = context if isinstance(context, TextContext) else model.prepare_text(context)
    cache = state.private_cache()
    if settings.conditions:
        prefill_conditions(model, cache, text, state.reference, state.garment)
    b = state.latent_shape[0]
    if rule == "window" and groups:  # one forward: the re-cached frames attend to each other (and the kept sink)
        slots = [s for g, _ in groups for s in g]
        positions = [p for _, g in groups for p in g]
        if positions != list(range(positions[0], positions[0] + len(positions))):
            raise RuntimeError(f"internal: the cached frames {positions} are not consecutive")
        chunk_forward(model, cache, text, torch.cat(held, dim=2).to(model.device), torch.zeros(b, device=model.device),
                      slots, local_frames=state.local_frames, rope_offset=-state.clip_start)
    else:
        for (slots, _), latents in zip(groups, held):
            x = latents.to(model.device)
            chunk_forward(model, cache, text, x, torch.zeros(b, device=model.device), slots,
                          local_frames=state.local_frames, rope_offset=-state.clip_start)
    shot = new_shot and state.latent_frames > 0
    logger.info("prompt switch at latent frame %d (%s re-cache): re-cached %d chunks%s", state.latent_frames, rule,
                len(groups), ", new shot" if shot else "")
    changes = {"shot": state.shot + 1, "pin_next": settings.shot_sink} if shot else {}
    return state.with_cache(cache, text=text, switches=state.switches + 1, **changes)
