"""nodes/adapters.py without ComfyUI: the codec over a ComfyUI-like VAE plugs into the core's one session loop and
gives what the core VAE gives; LATENT / CONDITIONING conversions and their errors.

The pack is imported as a package (conftest), so everything core here comes from the pack's own import of
``chameleon_core`` (``comfyui_fashionchameleon.chameleon_core``), as the nodes see it inside ComfyUI.
"""

from __future__ import annotations

import pytest
import torch
from comfyui_fashionchameleon.chameleon_core.config import StreamSettings
from comfyui_fashionchameleon.chameleon_core.decoding import decode_chunks
from comfyui_fashionchameleon.chameleon_core.session import (
    GarmentSwitch,
    Session,
    TimedSwitch,
    encode_condition,
)
from comfyui_fashionchameleon.chameleon_core.streaming import start_stream
from comfyui_fashionchameleon.chameleon_core.taehv import TAEHVConfig, random_taehv
from comfyui_fashionchameleon.chameleon_core.random_models import random_transformer
from comfyui_fashionchameleon.chameleon_core.vae import build_vae
from comfyui_fashionchameleon.chameleon_core.latents import latent_family
from comfyui_fashionchameleon.nodes.adapters.checks import check_resolution
from comfyui_fashionchameleon.nodes.adapters.segments import latent_segments
from comfyui_fashionchameleon.nodes.adapters.stream_options import source_video
from comfyui_fashionchameleon.nodes.adapters.tiny_decoder import TinyPreview, check_decoder, is_tiny_decoder_file
from comfyui_fashionchameleon.nodes.adapters.vae import streaming_vae, vae_codec, vae_family
from comfyui_fashionchameleon.nodes.adapters.values import conditioning_tensor
from safetensors.torch import save_file

from tests.comfy_fakes import ComfyLikeVAE

SIZE = 32  # pixels: 2x2 latents of the Wan2.2 VAE


@pytest.fixture(scope="module")
def vae():
    return build_vae("wan2.2-tiny", seed=0)


def test_codec_encodes_each_image_alone_and_decodes_as_the_core_vae(vae):
    codec = vae_codec(ComfyLikeVAE(vae))
    images = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    want = torch.cat([vae.encode_image(images[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(codec.encode_image(images), want, atol=1e-5, rtol=0)
    latents = torch.randn(1, vae.latent_channels, 3, 2, 2)
    got = torch.cat(list(decode_chunks(codec, latents, 2)), dim=2)
    torch.testing.assert_close(got, torch.cat(list(decode_chunks(vae, latents, 2)), dim=2), atol=0, rtol=0)
    assert streaming_vae(codec.vae) is codec.decoder  # one core copy per ComfyUI VAE object


def test_session_with_the_comfy_codec_equals_the_session_with_the_core_vae(vae):
    """The nodes' codec in the core's one loop (decode, garment refresh, disentangle from the last shown frame)."""
    model = random_transformer(seed=0)
    family = model.config.latent
    gen = torch.Generator().manual_seed(3)
    reference, garment, garment2 = (torch.rand(1, 40, 24, 3, generator=gen) for _ in range(3))
    context = torch.randn(1, 5, model.config.text_dim, generator=gen)

    def run(codec):
        conds = [encode_condition(codec, family, img, garment=g, size=(SIZE, SIZE))
                 for img, g in ((reference, False), (garment, True))]
        state = start_stream(model, context=context, reference=conds[0], garment=conds[1], seed=7,
                             settings=StreamSettings(chunk_frames=1, cache_frames=6, steps=1))
        session = Session(state, chunks=3, codec=codec, timeline=[TimedSwitch(2, GarmentSwitch(garment2))])
        return torch.cat([c.pixels for c in session], dim=2)

    comfy, core = run(vae_codec(ComfyLikeVAE(vae))), run(vae)
    assert comfy.shape == (1, 3, 4 * 2 + 1 - 4, SIZE, SIZE)  # the switch's new clip: its first latent not shown
    torch.testing.assert_close(comfy, core, atol=1e-4, rtol=0)


def test_latent_segments_join_in_order_and_name_what_is_wrong():
    family = latent_family(48)
    a, b = torch.zeros(1, 48, 2, 2, 2), torch.ones(1, 48, 3, 2, 2)
    joined = latent_segments("N", family, {"segment_2": {"samples": b}, "segment_1": {"samples": a},
                                           "segment_3": None})
    torch.testing.assert_close(joined["samples"], torch.cat([a, b], dim=2))
    with pytest.raises(ValueError, match=r"N: input 'segment_2' got 'shape \(1, 16, 2, 2, 2\)'.*Fix:"):
        latent_segments("N", family, {"segment_1": {"samples": a},
                                      "segment_2": {"samples": torch.zeros(1, 16, 2, 2, 2)}})
    with pytest.raises(ValueError, match="no segment connected"):
        latent_segments("N", family, {"segment_1": None})


def test_conditioning_vae_and_resolution_errors_name_node_input_value_and_fix():
    features = torch.randn(1, 7, 16)
    assert conditioning_tensor("N", "positive", [[features, {}]]) is features
    with pytest.raises(ValueError, match="N: input 'positive'.*not a CONDITIONING.*Fix: connect CLIPTextEncode"):
        conditioning_tensor("N", "positive", "a prompt")

    class NotWan:
        latent_channels = 4

    with pytest.raises(ValueError, match="N: input 'vae' got '4 latent channels': not a Wan VAE.*Fix:"):
        vae_family("N", NotWan())
    with pytest.raises(ValueError, match="N: input 'width' got 80: not a multiple of 32.*Fix: use 64"):
        check_resolution("N", latent_family(48), 80, 64)


TINY_TAEHV = TAEHVConfig(latent_channels=48, patch_size=2, widths=(16, 8, 8, 8))


class PreviewDecoder:
    """What CHAMELEON_PREVIEW_DECODER carries (``types.ChameleonPreviewDecoder``, which needs comfy_api to import)."""

    def __init__(self, decoder, name: str = "taew2_2.safetensors") -> None:
        self.decoder, self.name, self.family = decoder, name, decoder.family


def test_tiny_decoder_files_are_recognised_by_release_name_or_by_their_header(tmp_path):
    sd = {k: v.contiguous() for k, v in random_taehv(TINY_TAEHV).state_dict().items()}
    save_file(sd, str(tmp_path / "my_decoder.safetensors"))
    save_file({"decoder.1.weight": torch.zeros(4, 4, 3, 3)}, str(tmp_path / "taesd_decoder.safetensors"))
    (tmp_path / "taew2_1.pth").write_bytes(b"")  # a release name is offered as is; loading names what is wrong
    (tmp_path / "notes.safetensors").write_bytes(b"not a file")
    assert is_tiny_decoder_file(str(tmp_path / "my_decoder.safetensors"))
    assert is_tiny_decoder_file(str(tmp_path / "taew2_1.pth"))
    assert not is_tiny_decoder_file(str(tmp_path / "taesd_decoder.safetensors"))
    assert not is_tiny_decoder_file(str(tmp_path / "notes.safetensors"))


def test_decoder_family_check_names_node_input_value_and_fix():
    wan22, wan21 = latent_family(48), latent_family(16)
    dec = PreviewDecoder(random_taehv(TINY_TAEHV))
    check_decoder("N", dec, wan22)
    with pytest.raises(ValueError, match=r"N: input 'decoder' got 'taew2_2.safetensors': this tiny decoder decodes "
                                         r"wan2.2 latents but these are wan2.1.*Fix: load taew2_1.safetensors"):
        check_decoder("N", dec, wan21)
    with pytest.raises(ValueError, match="N: input 'decoder'.*not a tiny decoder.*Fix:"):
        check_decoder("N", object(), wan22)


def test_tiny_preview_shows_the_last_frame_of_one_carried_decode():
    """The preview's frames are those of one continuous tiny decode of the chunks (model-space latents in)."""
    family = latent_family(48)
    decoder = random_taehv(TINY_TAEHV, seed=3)
    chunks = [torch.randn(1, 48, 3, 2, 2, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    preview = TinyPreview(PreviewDecoder(decoder), family)
    shown = [preview(c) for c in chunks]
    whole = decoder.decode_model_space(torch.cat(chunks, dim=2))[0]  # [1, 3, 1 + 4 * 5, H, W]
    assert shown[1].shape == (32, 32, 3)
    for got, index in zip(shown, (8, 20)):
        want = ((whole[0, :, index].permute(1, 2, 0) + 1) / 2).clamp(0, 1)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_a_core_message_ending_in_a_full_stop_gives_one_full_stop_before_the_fix():
    from comfyui_fashionchameleon.chameleon_core.config import StreamSettings as Settings
    from comfyui_fashionchameleon.nodes.errors import rewrap

    with pytest.raises(ValueError) as err:
        Settings(cache_frames=4)
    message = str(rewrap("ChameleonStreamStart", "cache_frames", 4, err.value, "raise cache_frames"))
    assert message.startswith("ChameleonStreamStart: input 'cache_frames' got 4: cache_frames=4 leaves")
    assert ".." not in message and message.endswith("shrink the sink. Fix: raise cache_frames")


def test_a_source_video_attached_mid_stream_skips_its_first_frame_latent():
    """The video's latent 0 encodes its first frame alone; attached after the first chunk (where every stream latent
    covers 4 frames) it is dropped so the video's 4-frame groups land on the stream's; at Stream Start it is kept."""
    from comfyui_fashionchameleon.chameleon_core.streaming import generate

    model = random_transformer(seed=3)
    c = model.config.in_dim
    g = torch.Generator().manual_seed(0)
    state = start_stream(model, context=torch.randn(1, 5, model.config.text_dim, generator=g),
                         reference=torch.randn(1, c, 1, 4, 4, generator=g), garment=torch.randn(1, c, 1, 4, 4, generator=g),
                         seed=1, settings=StreamSettings(chunk_frames=1, cache_frames=6, steps=2))
    video = {"samples": torch.randn(1, c, 5, 4, 4, generator=g)}
    family = model.config.latent
    at_start = source_video("N", "video", state, video, 0.9)
    assert at_start.offset == 0
    torch.testing.assert_close(at_start.latents, family.to_model_space(video["samples"]))
    later, _ = generate(state, 1)
    mid = source_video("N", "video", later, video, 0.9)
    assert mid.offset == later.latent_frames == 1
    torch.testing.assert_close(mid.latents, family.to_model_space(video["samples"][:, :, 1:]))
    with pytest.raises(Exception, match="more than its first frame"):
        source_video("N", "video", later, {"samples": video["samples"][:, :, :1]}, 0.9)
