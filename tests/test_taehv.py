"""The streaming tiny decoder (TAEHV for Wan latents): key layout with exact checks, chunked == whole decode, an
independent frame-by-frame decode, frame counts equal the Wan VAE's, and the session takes it as its decoder.
Tiny widths, seeded random weights, fp32, CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from chameleon_core.decoding import StreamingDecoder
from chameleon_core.latents import WAN21, WAN22
from chameleon_core.taehv import (
    TAEHV_PRESETS,
    MemBlock,
    TAEHVConfig,
    TGrow,
    TinyVideoDecoder,
    load_taehv,
    random_taehv,
)

TINY = {
    "wan2.1": TAEHVConfig(latent_channels=16, patch_size=1, widths=(16, 8, 8, 4)),
    "wan2.2": TAEHVConfig(latent_channels=48, patch_size=2, widths=(16, 8, 8, 4)),
}


def _latents(cfg: TAEHVConfig, frames: int, seed: int = 1, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.latent_channels, frames, 3, 2, generator=g)


def _frame_by_frame(model: TinyVideoDecoder, z: torch.Tensor) -> torch.Tensor:
    """Independent decode: one frame at a time through the blocks in causal order, a frame's memory being the previous
    frame's input to that MemBlock (the reference's sequential traversal); normalised latents in, [0, 1] out."""
    memory: dict[int, torch.Tensor] = {}
    out = []

    def run(x: torch.Tensor, start: int) -> None:
        for i in range(start, len(model.decoder)):
            block = model.decoder[i]
            if isinstance(block, MemBlock):
                past = memory.get(i, torch.zeros_like(x))
                memory[i] = x
                x = block(x, past)
            elif isinstance(block, TGrow):
                grown = block.conv(x)  # [1, s*C, H, W]
                for part in grown.chunk(block.stride, 1):
                    run(part, i + 1)
                return
            else:
                x = block(x)
        out.append(F.pixel_shuffle(x, model.config.patch_size) if model.config.patch_size > 1 else x)

    with torch.no_grad():
        for t in range(z.shape[2]):
            run(z[:, :, t], 0)
    frames = torch.stack(out, 2)[:, :, model.config.frames_to_trim :]
    return frames.clamp(0, 1) * 2 - 1


@pytest.mark.parametrize("family", ["wan2.1", "wan2.2"])
def test_whole_decode_equals_frame_by_frame_and_counts_frames_like_the_wan_vae(family):
    cfg = TINY[family]
    model = random_taehv(cfg, seed=0)
    raw = _latents(cfg, 4)
    pixels = model.decode(raw)
    fam = WAN21 if family == "wan2.1" else WAN22
    assert pixels.shape == (1, 3, fam.video_frames(4), 3 * fam.spatial_stride, 2 * fam.spatial_stride)
    ref = _frame_by_frame(model, fam.to_model_space(raw))
    torch.testing.assert_close(pixels, ref, atol=1e-5, rtol=1e-5)
    assert pixels.min() >= -1 and pixels.max() <= 1


@pytest.mark.parametrize("family", ["wan2.1", "wan2.2"])
def test_chunked_decode_equals_whole_decode(family):
    cfg = TINY[family]
    model = random_taehv(cfg, seed=2)
    raw = _latents(cfg, 7, batch=2)
    whole = model.decode(raw)
    state, parts, sizes = None, [], []
    for start, n in ((0, 3), (3, 3), (6, 1)):
        px, state = model.decode_chunk(raw[:, :, start : start + n], state, consume=True)
        parts.append(px)
        sizes.append(px.shape[2])
    assert sizes == [9, 12, 4]  # the Wan VAE's counts: first chunk 1 + 4 (n - 1), later 4 n
    torch.testing.assert_close(torch.cat(parts, 2), whole, atol=1e-5, rtol=1e-5)
    assert state.latent_frames == 7 and state.nbytes > 0


def test_streaming_decoder_takes_model_space_directly_and_counts_video_frames():
    cfg = TINY["wan2.2"]
    model = random_taehv(cfg, seed=3)
    lat = WAN22.to_model_space(_latents(cfg, 6))
    dec = StreamingDecoder(model, WAN22)
    out = torch.cat([dec.decode(lat[:, :, :3]), dec.decode(lat[:, :, 3:])], 2)
    assert dec.video_frames == WAN22.video_frames(6) == out.shape[2] == 21
    torch.testing.assert_close(out, model.decode_model_space(lat)[0])
    torch.testing.assert_close(dec.last_frame, out[:, :, -1])


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_file_round_trip_with_exact_keys(tmp_path, suffix):
    cfg = TINY["wan2.2"]
    model = random_taehv(cfg, seed=4)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd["encoder.0.weight"] = torch.zeros(64, 12, 3, 3)  # released files carry the encoder too: skipped
    path = tmp_path / f"taew2_2{suffix}"
    save_file(sd, str(path)) if suffix == ".safetensors" else torch.save(sd, path)
    loaded = load_taehv(path)
    assert loaded.config == cfg
    raw = _latents(cfg, 3)
    torch.testing.assert_close(loaded.decode(raw), model.decode(raw), atol=0, rtol=0)


def test_renamed_or_extra_key_is_refused_by_name(tmp_path):
    model = random_taehv(TINY["wan2.1"], seed=5)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd["decoder.3.conv.0.weightx"] = sd.pop("decoder.3.conv.0.weight")
    save_file(sd, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['decoder.3.conv.0.weight'\].*unexpected \['decoder.3.conv.0.weightx'\]"):
        load_taehv(tmp_path / "bad.safetensors")
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd["decoder.13.conv.weight"] = torch.zeros(3, 3, 1, 1)
    save_file(sd, str(tmp_path / "bad2.safetensors"))
    with pytest.raises(ValueError, match="decoder.13.conv.weight: expected shape"):
        load_taehv(tmp_path / "bad2.safetensors")


def test_first_tgrow_stored_with_growth_keeps_the_last_subframe(tmp_path):
    model = random_taehv(TINY["wan2.1"], seed=6)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    w = sd["decoder.7.conv.weight"]
    sd["decoder.7.conv.weight"] = torch.cat([torch.randn_like(w), w])  # [2n, n, 1, 1] as some files store it
    save_file(sd, str(tmp_path / "taew2_1.safetensors"))
    torch.testing.assert_close(load_taehv(tmp_path / "taew2_1.safetensors").decoder[7].conv.weight, w)


def test_release_presets_have_the_published_shapes():
    for cfg in TAEHV_PRESETS.values():
        with torch.device("meta"):
            sd = TinyVideoDecoder(cfg).state_dict()
        assert sd["decoder.1.weight"].shape == (256, cfg.latent_channels, 3, 3)
        assert sd["decoder.3.conv.0.weight"].shape == (256, 512, 3, 3)
        assert sd["decoder.13.conv.weight"].shape == (256, 128, 1, 1)  # TGrow(128, 2)
        assert sd["decoder.22.weight"].shape == (3 * cfg.patch_size**2, 64, 3, 3)
        assert not any("skip" in k for k in sd)
