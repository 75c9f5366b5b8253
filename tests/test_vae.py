"""The Wan VAE: checkpoint layouts, agreement with diffusers' independent AutoencoderKLWan, streaming == whole, loading
and bad input. Tiny configs (widths 8-16), fp32, CPU."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from chameleon_core.checkpoints import infer_vae_config, load_vae, vae_from_state_dict
from chameleon_core.latents import WAN21, WAN22
from chameleon_core.vae import (
    VAE_PRESETS,
    VAEConfig,
    VAEStreamState,
    WanVAE,
    build_vae,
    check_vae_matches,
)
from chameleon_core.vae_modules import CausalConv3d, StepCache

from .conftest import load_layout

ATOL = 1e-5


def _video(vae: WanVAE, frames: int, batch: int = 1) -> torch.Tensor:
    """Random pixels of 2x2 latent cells (16x16 for Wan2.1, 32x32 for Wan2.2): the smallest non-trivial size."""
    size = 2 * vae.config.spatial_stride
    return torch.rand(batch, 3, frames, size, size) * 2 - 1


def _latents(vae: WanVAE, frames: int, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, vae.config.z_dim, frames, 2, 2)


# --- 1. layouts ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout, preset", [("wan2.1-vae", "wan2.1"), ("wan2.2-vae", "wan2.2")])
def test_state_dict_layout_matches_reference(layout, preset):
    ref = load_layout(layout)
    config = VAE_PRESETS[preset]
    with torch.device("meta"):
        model = config.build()
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(ours) == sorted(ref["tensors"])
    mismatched = {k: (ours[k], ref["tensors"][k]) for k in ours if ours[k] != ref["tensors"][k]}
    assert not mismatched
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"]
    rc = ref["config"]
    assert (config.dim, config.z_dim, list(config.dim_mult), config.num_res_blocks) == (
        rc["dim"], rc["z_dim"], rc["dim_mult"], rc["num_res_blocks"]
    )  # fmt: skip
    assert list(config.temporal_downsample) == rc["temperal_downsample"]
    # The loader's config inference recovers the preset from the shapes alone.
    assert infer_vae_config({k: tuple(v) for k, v in ref["tensors"].items()}) == config


def test_strides_and_families_of_presets():
    assert (VAE_PRESETS["wan2.1"].spatial_stride, VAE_PRESETS["wan2.1"].temporal_stride) == (8, 4)
    assert (VAE_PRESETS["wan2.2"].spatial_stride, VAE_PRESETS["wan2.2"].temporal_stride) == (16, 4)
    assert build_vae("wan2.1-tiny").family is WAN21
    assert build_vae("wan2.2-tiny").family is WAN22


# --- 2. an independent implementation: diffusers' AutoencoderKLWan --------------------------------------------------


def _res_names(rest: str) -> str:
    for ours, theirs in (("residual.0.", "norm1."), ("residual.2.", "conv1."), ("residual.3.", "norm2."),
                         ("residual.6.", "conv2."), ("shortcut.", "conv_shortcut.")):  # fmt: skip
        rest = rest.replace(ours, theirs)
    return rest


def _to_diffusers_name(name: str, nrb: int) -> str:
    """Original Wan VAE key -> diffusers AutoencoderKLWan key (written from diffusers 0.42.1's module tree)."""
    if name.startswith(("conv1.", "conv2.")):
        return {"conv1": "quant_conv", "conv2": "post_quant_conv"}[name[:5]] + name[5:]
    side, rest = name.split(".", 1)
    for ours, theirs in (("conv1.", "conv_in."), ("head.0.", "norm_out."), ("head.2.", "conv_out.")):
        if rest.startswith(ours):
            return f"{side}.{theirs}{rest[len(ours):]}"
    if m := re.fullmatch(r"middle\.(\d)\.(.*)", rest):
        slot = {"0": "resnets.0.", "1": "attentions.0.", "2": "resnets.1."}[m.group(1)]
        return f"{side}.mid_block.{slot}{_res_names(m.group(2))}"
    if m := re.fullmatch(r"downsamples\.(\d+)\.downsamples\.(\d+)\.(.*)", rest):  # Wan2.2 encoder
        i, j, r = int(m.group(1)), int(m.group(2)), m.group(3)
        return f"encoder.down_blocks.{i}." + (f"resnets.{j}.{_res_names(r)}" if j < nrb else f"downsampler.{r}")
    if m := re.fullmatch(r"downsamples\.(\d+)\.(.*)", rest):  # Wan2.1 encoder: same flat list
        return f"encoder.down_blocks.{m.group(1)}.{_res_names(m.group(2))}"
    if m := re.fullmatch(r"upsamples\.(\d+)\.upsamples\.(\d+)\.(.*)", rest):  # Wan2.2 decoder
        i, j, r = int(m.group(1)), int(m.group(2)), m.group(3)
        return f"decoder.up_blocks.{i}." + (f"resnets.{j}.{_res_names(r)}" if j <= nrb else f"upsampler.{r}")
    m = re.fullmatch(r"upsamples\.(\d+)\.(.*)", rest)  # Wan2.1 decoder: flat list, nrb + 1 blocks + 1 resample
    stage, j = divmod(int(m.group(1)), nrb + 2)
    slot = f"resnets.{j}.{_res_names(m.group(2))}" if j <= nrb else f"upsamplers.0.{m.group(2)}"
    return f"decoder.up_blocks.{stage}.{slot}"


def _diffusers_twin(vae: WanVAE):
    diffusers = pytest.importorskip("diffusers")
    cfg = vae.config
    kwargs = dict(
        base_dim=cfg.dim, decoder_base_dim=cfg.decoder_dim, z_dim=cfg.z_dim, dim_mult=list(cfg.dim_mult),
        num_res_blocks=cfg.num_res_blocks, temperal_downsample=list(cfg.temporal_downsample),
        latents_mean=[0.0] * cfg.z_dim, latents_std=[1.0] * cfg.z_dim,
    )  # fmt: skip
    if cfg.family == "wan2.2":  # diffusers' Wan2.2 variant: residual stages on 2x2-patchified pixels
        kwargs.update(is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16)
    twin = diffusers.AutoencoderKLWan(**kwargs).eval()
    state = {_to_diffusers_name(k, cfg.num_res_blocks): v for k, v in vae.model.state_dict().items()}
    twin.load_state_dict(state, strict=True)
    return twin


def test_encode_and_decode_match_diffusers(tiny_vae, monkeypatch):
    twin = _diffusers_twin(tiny_vae)
    video = _video(tiny_vae, 9, batch=2)
    with torch.no_grad():
        mu_theirs = twin.encode(video).latent_dist.mode()  # the mean, not a sample
    mu_ours = tiny_vae.encode(video)
    assert mu_ours.shape == (2, tiny_vae.config.z_dim, 3, 2, 2)
    torch.testing.assert_close(mu_ours, mu_theirs, atol=ATOL, rtol=0)

    latents = _latents(tiny_vae, 4, batch=2)
    with torch.no_grad():
        clamped_theirs = twin.decode(latents).sample
    torch.testing.assert_close(tiny_vae.decode(latents), clamped_theirs, atol=ATOL, rtol=0)

    # diffusers clamps to [-1, 1] inside _decode; compare the raw decoder output with the clamp disabled.
    import diffusers.models.autoencoders.autoencoder_kl_wan as wan_module

    monkeypatch.setattr(wan_module.torch, "clamp", lambda x, min=None, max=None: x)
    with torch.no_grad():
        raw_theirs = twin.decode(latents).sample
    monkeypatch.undo()
    raw_ours = tiny_vae.decode(latents, clamp=False)
    assert raw_ours.shape == (2, 3, 13, *video.shape[-2:])
    assert raw_ours.abs().max() > 1.0  # otherwise the raw comparison would not test anything beyond the clamped one
    torch.testing.assert_close(raw_ours, raw_theirs, atol=ATOL, rtol=0)

    # Streaming decode against the independent whole-video decode too.
    pieces, state = [], None
    for a, b in [(0, 1), (1, 3), (3, 4)]:
        out, state = tiny_vae.decode_chunk(latents[:, :, a:b], state, clamp=False)
        pieces.append(out)
    torch.testing.assert_close(torch.cat(pieces, dim=2), raw_theirs, atol=ATOL, rtol=0)


# --- 3. streaming decode -------------------------------------------------------------------------------------------


def test_chunked_decode_equals_whole(tiny_vae):
    latents = _latents(tiny_vae, 6)
    whole = tiny_vae.decode(latents, clamp=False)
    assert whole.shape[2] == 4 * (6 - 1) + 1
    for chunk in (1, 2, 3):
        pieces, state = [], None
        for start in range(0, 6, chunk):
            out, state = tiny_vae.decode_chunk(latents[:, :, start : start + chunk], state, clamp=False)
            assert out.shape[2] == (4 * chunk - 3 if start == 0 else 4 * chunk)
            pieces.append(out)
        assert state.latent_frames == 6
        assert (torch.cat(pieces, dim=2) - whole).abs().max() <= ATOL, f"chunks of {chunk}"


def test_decode_is_causal_and_states_are_immutable(tiny_vae):
    latents = _latents(tiny_vae, 5)
    whole = tiny_vae.decode(latents)
    # A prefix of the latents decodes to the same prefix of pixels.
    torch.testing.assert_close(tiny_vae.decode(latents[:, :, :2]), whole[:, :, :5], atol=ATOL, rtol=0)
    # Continuing twice from one state gives the same pixels: decode_chunk never changes the state it is given.
    _, mid = tiny_vae.decode_chunk(latents[:, :, :2])
    snapshot = {k: v.clone() for k, v in mid.caches.items()}
    first, _ = tiny_vae.decode_chunk(latents[:, :, 2:], mid)
    again, _ = tiny_vae.decode_chunk(latents[:, :, 2:], mid)
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    torch.testing.assert_close(first, whole[:, :, 5:], atol=ATOL, rtol=0)
    assert all(torch.equal(snapshot[k], v) for k, v in mid.caches.items())


def test_consume_releases_the_old_state(tiny_vae):
    latents = _latents(tiny_vae, 4)
    whole = tiny_vae.decode(latents)
    _, first = tiny_vae.decode_chunk(latents[:, :, :2])
    size = first.nbytes
    rest, second = tiny_vae.decode_chunk(latents[:, :, 2:], first, consume=True)
    torch.testing.assert_close(rest, whole[:, :, 5:], atol=ATOL, rtol=0)
    assert first.consumed and first.nbytes == 0
    assert not second.consumed and second.nbytes == size
    with pytest.raises(ValueError, match=r"consumed by an earlier decode_chunk.*consume=False"):
        tiny_vae.decode_chunk(latents[:, :, 2:], first)

    video = _video(tiny_vae, 9)
    _, state = tiny_vae.encode_chunk(video[:, :, :5])
    out, _ = tiny_vae.encode_chunk(video[:, :, 5:], state, consume=True)
    torch.testing.assert_close(out, tiny_vae.encode(video)[:, :, 2:], atol=ATOL, rtol=0)
    assert state.consumed


def test_state_size_does_not_grow_with_video_length(tiny_vae):
    latents = _latents(tiny_vae, 7)
    _, state = tiny_vae.decode_chunk(latents[:, :, :1])
    _, state = tiny_vae.decode_chunk(latents[:, :, 1:3], state)
    size_after_3 = state.nbytes
    _, state = tiny_vae.decode_chunk(latents[:, :, 3:7], state)
    assert state.nbytes == size_after_3
    # Every entry is at most two frames (the causal kernel's history), per the reference's CACHE_T.
    assert all(t.shape[2] <= 2 for t in state.caches.values())


def test_causal_conv_in_pieces_equals_one_causal_conv():
    conv = CausalConv3d(3, 5, 3)
    conv.cache_key = "conv"
    x = torch.randn(2, 3, 9, 6, 6)
    # Independent: zero-pad two frames in front and convolve the whole sequence at once.
    whole = F.conv3d(F.pad(x, (1, 1, 1, 1, 2, 0)), conv.weight, conv.bias)
    cache = StepCache()
    pieces = [conv(x[:, :, a:b], cache) for a, b in [(0, 1), (1, 5), (5, 6), (6, 9)]]
    torch.testing.assert_close(torch.cat(pieces, dim=2), whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("stride, padding, kernel", [((1, 1, 1), (0, 1, 1), 3), ((2, 1, 1), (0, 0, 0), (3, 1, 1)),
                                                     ((1, 1, 1), (0, 0, 0), 1)])
def test_batch_of_one_convolution_equals_pytorchs_and_uses_onednn(stride, padding, kernel):
    """A batch of one in fp32 on the CPU goes to oneDNN (PyTorch's own dispatch sends it to its slow reference loop):
    forward and gradients equal ``F.conv3d``'s, which for a batch of one is that loop, an independent computation."""
    from torch.profiler import ProfilerActivity, profile

    from chameleon_core.vae_modules import _ONEDNN, Conv3d, conv3d

    torch.manual_seed(0)
    conv = Conv3d(6, 5, kernel, stride=stride, padding=padding)
    x = torch.randn(1, 6, 7, 9, 9, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        y = conv(x)
    ops = {e.key for e in prof.key_averages()}
    if _ONEDNN:
        assert "aten::mkldnn_convolution" in ops and "aten::slow_conv3d_forward" not in ops, ops
    y.square().sum().backward()
    grads = (x.grad, conv.weight.grad, conv.bias.grad)
    x2 = x.detach().clone().requires_grad_(True)
    w2, b2 = conv.weight.detach().clone().requires_grad_(True), conv.bias.detach().clone().requires_grad_(True)
    y2 = F.conv3d(x2, w2, b2, stride, padding)
    y2.square().sum().backward()
    torch.testing.assert_close(y, y2, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, (x2.grad, w2.grad, b2.grad)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    # other inputs keep PyTorch's own dispatch, unchanged
    xb = torch.randn(3, 6, 7, 9, 9)
    torch.testing.assert_close(conv3d(xb, conv.weight, conv.bias, stride, padding),
                               F.conv3d(xb, conv.weight, conv.bias, stride, padding), atol=0, rtol=0)
    xh = x.detach().bfloat16()
    torch.testing.assert_close(conv3d(xh, conv.weight.bfloat16(), None, stride, padding),
                               F.conv3d(xh, conv.weight.bfloat16(), None, stride, padding), atol=0, rtol=0)


def test_rms_norm_equals_the_reference_formula():
    """The VAE's RMSNorm (sum of squares and rsqrt) against ``F.normalize`` as Wan writes it, zero vectors included,
    in fp32 and bf16 (normalised in fp32)."""
    from chameleon_core.vae_modules import RMSNorm

    torch.manual_seed(0)
    norm = RMSNorm(8, 3)
    with torch.no_grad():
        norm.gamma.copy_(torch.rand(8, 1, 1, 1) + 0.5)
    x = torch.randn(2, 8, 3, 5, 5)
    x[0, :, 1, 2, 2] = 0.0
    want = F.normalize(x, dim=1) * 8**0.5 * norm.gamma
    torch.testing.assert_close(norm(x), want, atol=1e-6, rtol=1e-6)
    assert norm(x)[0, :, 1, 2, 2].abs().max() == 0
    xb = x.bfloat16()
    want_b = F.normalize(xb.float(), dim=1).bfloat16() * 8**0.5 * norm.gamma.bfloat16()
    torch.testing.assert_close(norm(xb), want_b, atol=0, rtol=8e-3)  # one bf16 step


# --- 4. streaming and single-image encode ----------------------------------------------------------------------------


def test_encode_in_pieces_equals_whole(tiny_vae):
    video = _video(tiny_vae, 17)
    whole = tiny_vae.encode(video)
    assert whole.shape[2] == 5
    for pieces in ([5, 4, 8], [1, 16], [9, 8]):
        outs, state, start = [], None, 0
        for n in pieces:
            out, state = tiny_vae.encode_chunk(video[:, :, start : start + n], state)
            outs.append(out)
            start += n
        assert state.latent_frames == 5
        assert (torch.cat(outs, dim=2) - whole).abs().max() <= ATOL, f"pieces {pieces}"


def test_encode_image_is_the_first_latent_frame_and_round_trips(tiny_vae):
    video = _video(tiny_vae, 5, batch=2)
    one = tiny_vae.encode_image(video[:, :, 0])
    assert one.shape == (2, tiny_vae.config.z_dim, 1, 2, 2)
    torch.testing.assert_close(one, tiny_vae.encode(video)[:, :, :1], atol=ATOL, rtol=0)
    # Reference KV disentangle: decode a stream, take its last frame, re-encode it as a one-frame latent, and
    # convert to model space in the one place that knows the statistics.
    frames, _ = tiny_vae.decode_chunk(_latents(tiny_vae, 3, batch=2))
    last = tiny_vae.encode_image(frames[:, :, -1])
    model_space = tiny_vae.family.to_model_space(last)
    torch.testing.assert_close(tiny_vae.family.to_raw(model_space), last, atol=1e-5, rtol=0)


def test_bad_frame_counts_and_sizes_are_refused(tiny_vae):
    with pytest.raises(ValueError, match=r"1 \+ 4k frames.*got 7.*trim it to 5.*pad it to 9"):
        tiny_vae.encode(_video(tiny_vae, 7))
    _, state = tiny_vae.encode_chunk(_video(tiny_vae, 5))
    with pytest.raises(ValueError, match=r"multiple of 4 frames.*got 3"):
        tiny_vae.encode_chunk(_video(tiny_vae, 3), state)
    with pytest.raises(ValueError, match=r"does not continue this stream"):
        tiny_vae.encode_chunk(_video(tiny_vae, 4, batch=2), state)
    with pytest.raises(ValueError, match=r"came from encode_chunk"):
        tiny_vae.decode_chunk(_latents(tiny_vae, 1), state)
    stride = tiny_vae.config.spatial_stride
    with pytest.raises(ValueError, match=rf"multiple of {stride}"):
        tiny_vae.encode(torch.zeros(1, 3, 1, stride, stride + stride // 2))
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\].*image_to_video"):
        tiny_vae.encode(torch.zeros(1, 32, 32, 3))
    with pytest.raises(ValueError, match=rf"\[B, {tiny_vae.config.z_dim}, T, h, w\].*shape \(1, 7, 2, 2, 2\)"):
        tiny_vae.decode(torch.zeros(1, 7, 2, 2, 2))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tiny_vae.encode_image(torch.zeros(1, 3, 1, 16, 16))


# --- 5. the VAE and the transformer ----------------------------------------------------------------------------------


def test_check_vae_matches():
    vae21, vae22 = build_vae("wan2.1-tiny"), build_vae("wan2.2-tiny")
    check_vae_matches(vae21, 16)
    check_vae_matches(vae22, 48)
    with pytest.raises(ValueError, match=r"takes 48-channel.*makes 16-channel.*Wan2.1 VAE\).*load the Wan2.2 VAE"):
        check_vae_matches(vae21, 48)
    with pytest.raises(ValueError, match=r"takes 16-channel.*makes 48-channel.*load the Wan2.1 VAE"):
        check_vae_matches(vae22, 16)
    with pytest.raises(TypeError, match="latent_channels"):
        check_vae_matches("vae.safetensors", 16)


def test_custom_latent_width_has_no_family():
    vae = build_vae(VAEConfig("wan2.1", dim=8, decoder_dim=8, z_dim=4, dim_mult=(1, 1), temporal_downsample=(True,)))
    assert vae.latent_size(16, 16) == (8, 8)
    assert vae.decode(torch.randn(1, 4, 3, 2, 2)).shape == (1, 3, 5, 4, 4)  # temporal stride 2
    with pytest.raises(ValueError, match="custom latent space"):
        _ = vae.family


# --- 6. loading -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "vae.", "first_stage_model."])
def test_load_safetensors_with_prefixes(tiny_vae_file, prefix):
    original, path = tiny_vae_file(prefix)
    loaded = load_vae(path)
    assert loaded.config == original.config
    latents = _latents(original, 2)
    torch.testing.assert_close(loaded.decode(latents), original.decode(latents), atol=0, rtol=0)


def test_load_pth_and_nested_and_dtype(tmp_path):
    original = build_vae("wan2.1-tiny", seed=3)
    flat, nested = tmp_path / "Wan2.1_VAE.pth", tmp_path / "nested.pt"
    torch.save(original.model.state_dict(), flat)
    torch.save({"state_dict": {"model." + k: v for k, v in original.model.state_dict().items()}}, nested)
    video = _video(original, 5)
    for path in (flat, nested):
        loaded = load_vae(path)
        assert loaded.config == original.config
        torch.testing.assert_close(loaded.encode(video), original.encode(video), atol=0, rtol=0)
    assert load_vae(tmp_path / "nested", dtype=torch.bfloat16).dtype == torch.bfloat16  # suffix is found
    assert load_vae(tmp_path).config == original.config  # a folder holding one known file name


def test_vae_from_state_dict_shares_the_tensors():
    original = build_vae("wan2.2-tiny", seed=4)
    state = {"first_stage_model." + k: v for k, v in original.model.state_dict().items()}
    twin = vae_from_state_dict(state)
    assert twin.model.conv2.weight.data_ptr() == original.model.conv2.weight.data_ptr()


def test_missing_file_lists_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_vae(tmp_path / "wan2.2_vae")
    message = str(err.value)
    for suffix in (".safetensors", ".pth"):
        assert str(tmp_path / f"wan2.2_vae{suffix}") in message
    with pytest.raises(FileNotFoundError, match="Wan2.2_VAE.pth"):
        load_vae(tmp_path)  # an empty folder


def test_unknown_and_diffusers_layouts_are_named(tmp_path):
    from safetensors.torch import save_file

    save_file({"blocks.0.weight": torch.zeros(2), "blocks.1.weight": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match=r"not a Wan VAE.*first keys: \['blocks.0.weight', 'blocks.1.weight'\]"):
        load_vae(tmp_path / "x.safetensors")
    save_file({"decoder.conv_in.weight": torch.zeros(2), "post_quant_conv.weight": torch.zeros(2)},
              str(tmp_path / "d.safetensors"))  # fmt: skip
    with pytest.raises(ValueError, match="diffusers AutoencoderKLWan"):
        load_vae(tmp_path / "d.safetensors")
    (tmp_path / "vae.gguf").write_bytes(b"GGUF")
    with pytest.raises(ValueError, match=r"unsupported VAE file type '.gguf'"):
        load_vae(tmp_path / "vae.gguf")


def test_shape_mismatch_names_the_tensor(tmp_path):
    from safetensors.torch import save_file

    state = dict(build_vae("wan2.1-tiny").model.state_dict())
    state["decoder.middle.1.proj.weight"] = torch.zeros(16, 8, 1, 1)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"decoder.middle.1.proj.weight has shape \(16, 8, 1, 1\), expected \(16, 16"):
        load_vae(tmp_path / "bad.safetensors")
    del state["decoder.middle.1.proj.weight"]
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match=r"missing 1 tensors \['decoder.middle.1.proj.weight'\]"):
        load_vae(tmp_path / "missing.safetensors")


class _RunsCode:
    """Unpickling this would run code (here: create a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def test_pickled_objects_in_pth_are_refused_without_running(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    state = dict(build_vae("wan2.1-tiny").model.state_dict())
    state["payload"] = _RunsCode(marker)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"refusing to load .*evil.pth.*weights_only=True"):
        load_vae(path)
    assert not marker.exists()


def test_truncated_files_are_reported(tiny_vae_file, tmp_path):
    _, path = tiny_vae_file()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_vae(path)
    pth = tmp_path / "cut.pth"
    torch.save(build_vae("wan2.1-tiny").model.state_dict(), pth)
    pth.write_bytes(pth.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated or damaged"):
        load_vae(pth)


def test_state_type_is_checked(tiny_vae):
    with pytest.raises(TypeError, match="VAEStreamState"):
        tiny_vae.decode_chunk(_latents(tiny_vae, 1), {"not": "a state"})
    assert isinstance(tiny_vae.decode_chunk(_latents(tiny_vae, 1))[1], VAEStreamState)


def test_bench_cli_reports_every_chunk(tmp_path, capsys):
    import json

    from chameleon_core.tools import bench_vae

    out = tmp_path / "bench.json"
    argv = ["--family", "wan2.2", "--tiny", "--height", "32", "--width", "32", "--latent-frames", "3", "--chunk-frames", "2"]
    assert bench_vae.main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [c["pixel_frames"] for c in result["chunks"]] == [5, 4]
    assert result["pixel_frames"] == 9 and result["latent_grid"] == [2, 2]
    assert result["chunks"][0]["state_mib"] == result["chunks"][1]["state_mib"] > 0
    assert "chunk 1: 1 latent -> 4 pixel frames" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_vae.main(["--height", "30", "--tiny"])  # not a multiple of 16: argparse error, exit code 2


# --- issue 13: decoded frames checked; the damaged tensor named ----------------------------------------------------


def test_nan_weights_give_an_error_naming_the_vae_file_not_a_black_video(tmp_path):
    from chameleon_core.vae import NonFiniteVAEError

    vae = build_vae("wan2.2-tiny", seed=0)
    with torch.no_grad():
        vae.model.decoder.head[2].weight[0, 0, 0, 0, 0] = float("nan")  # damaged after loading (or fp16 overflow)
    vae.source = str(tmp_path / "wan2.2_vae.safetensors")
    z = torch.randn(1, 48, 2, 2, 2)
    with pytest.raises(NonFiniteVAEError, match=r"decoded frames of latent frames 0\.\.1 contain NaN.*wan2\.2_vae\."
                       r"safetensors.*re-download"):
        vae.decode_chunk(z)
    vae.source = None
    with pytest.raises(NonFiniteVAEError, match="source file unknown"):
        vae.decode(z)


def test_loaded_vae_knows_its_file_and_refuses_nan_weights(tmp_path, tiny_vae_file):
    from safetensors.torch import load_file, save_file

    from chameleon_core.checkpoints import CheckpointError

    _, path = tiny_vae_file()
    assert load_vae(path).source == str(path)
    sd = load_file(str(path))
    sd["decoder.head.2.weight"][0, 0, 0, 0, 0] = float("nan")
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=r"VAE .*vae\.safetensors holds NaN/inf.*decoder\.head\.2\.weight.*"
                       r"re-download"):
        load_vae(path)


def test_shape_error_names_the_damaged_tensor(tmp_path, tiny_vae_file):
    from safetensors.torch import load_file, save_file

    _, path = tiny_vae_file()
    sd = load_file(str(path))
    sd["decoder.head.2.weight"] = torch.zeros(12, 9, 3, 3, 3)  # one damaged tensor (the stored one is [12, 8, ...])
    save_file(sd, str(path))
    with pytest.raises(ValueError, match=r"tensor decoder\.head\.2\.weight has shape \(12, 9, 3, 3, 3\), expected "
                       r"\(12, 8, 3, 3, 3\).*re-download") as info:
        load_vae(path)
    assert "decoder.conv1" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_says_so(tiny_vae_file):
    _, path = tiny_vae_file()
    with pytest.raises(ValueError, match=r"sees no CUDA device.*device='cpu'"):
        load_vae(path, device="cuda")
