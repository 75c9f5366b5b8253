"""nodes/adapters/values.py and chameleon_core/images.py: IMAGE <-> pixel layouts, alpha/grey handling, the
reference/garment/video fitting geometry, and the resize policy checked against PIL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


from comfyui_fashionchameleon.nodes.adapters.values import image_to_video, video_to_image

from chameleon_core import images as core_images  # noqa: E402


def test_module_imports_without_comfy(tmp_path):
    (tmp_path / "pack").symlink_to(REPO, target_is_directory=True)  # as custom_nodes/<pack> in ComfyUI
    code = (
        "import sys\n"
        "import pack.nodes.types\n"
        "from pack.nodes.adapters import checks, model_files, models, native, segments, stream_options, "
        "stream_start, tiny_decoder, vae, values\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths', 'server')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.strip() == "[]"


def test_image_video_layouts_and_round_trip():
    image = torch.rand(5, 6, 7, 3)  # 5 frames of 6x7
    video = image_to_video(image)
    assert video.shape == (1, 3, 5, 6, 7)
    for t, y, x, c in [(0, 0, 0, 0), (4, 5, 6, 2), (2, 3, 1, 1)]:
        assert video[0, c, t, y, x] == pytest.approx(image[t, y, x, c].item() * 2 - 1)
    back = video_to_image(video)
    assert back.shape == image.shape
    torch.testing.assert_close(back, image, atol=1e-6, rtol=0)

    pixels = core_images.to_pixels(image[:2])
    assert pixels.shape == (2, 3, 6, 7)
    torch.testing.assert_close(pixels[1, 2], image[1, :, :, 2] * 2 - 1)


def test_video_to_image_flattens_batches_in_order_and_clamps():
    video = torch.linspace(-1.5, 1.5, 2 * 3 * 4 * 2 * 2).reshape(2, 3, 4, 2, 2)
    out = video_to_image(video)
    assert out.shape == (8, 2, 2, 3)
    assert out.min() >= 0 and out.max() <= 1
    # frame index b * T + t
    expected = ((video[1, :, 2].permute(1, 2, 0) + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(out[1 * 4 + 2], expected)


def test_rgba_composites_over_white():
    rgba = torch.zeros(1, 1, 3, 4)
    rgba[0, 0, :, :3] = torch.tensor([0.2, 0.4, 0.6])
    rgba[0, 0, :, 3] = torch.tensor([0.0, 0.5, 1.0])
    rgb = core_images.to_rgb(rgba)
    assert rgb.shape == (1, 1, 3, 3)
    torch.testing.assert_close(rgb[0, 0, 0], torch.ones(3))  # transparent -> white
    torch.testing.assert_close(rgb[0, 0, 1], torch.tensor([0.6, 0.7, 0.8]))  # half: mix with white
    torch.testing.assert_close(rgb[0, 0, 2], torch.tensor([0.2, 0.4, 0.6]))  # opaque -> colour


def test_greyscale_and_grey_alpha_become_rgb():
    grey = torch.rand(2, 4, 5, 1)
    rgb = core_images.to_rgb(grey)
    assert rgb.shape == (2, 4, 5, 3)
    for c in range(3):
        torch.testing.assert_close(rgb[..., c], grey[..., 0])
    la = torch.tensor([[[[0.3, 0.5]]]])
    torch.testing.assert_close(core_images.to_rgb(la)[0, 0, 0], torch.full((3,), 0.3 * 0.5 + 0.5))


def _column_blocks(width: int, height: int, values: list[float]) -> torch.Tensor:
    """IMAGE whose columns are split into len(values) equal constant blocks."""
    image = torch.empty(1, height, width, 3)
    step = width // len(values)
    for i, v in enumerate(values):
        image[:, :, i * step : (i + 1) * step] = v
    return image


def test_fit_reference_scales_by_max_ratio_and_centre_crops():
    # 100x50 (WxH) -> 64x64: ratio max(0.64, 1.28) = 1.28 -> 128x64; crop columns 32..95, i.e. blocks B and C.
    image = _column_blocks(100, 50, [0.1, 0.3, 0.6, 0.9])
    out = core_images.fit_reference(image, 64, 64)
    assert out.shape == (1, 64, 64, 3)
    # Away from the block edges the bilinear resize keeps the constants exactly.
    torch.testing.assert_close(out[:, :, 2:29], torch.full_like(out[:, :, 2:29], 0.3))
    torch.testing.assert_close(out[:, :, 35:62], torch.full_like(out[:, :, 35:62], 0.6))

    # Portrait target from a square: 40x40 -> 20x30 scales to 30x30 and crops columns floor(10 / 2) = 5 .. 24.
    square = _column_blocks(40, 40, [0.0, 0.25, 0.5, 1.0])  # blocks of 10 -> 7.5 px after scaling
    out = core_images.fit_reference(square, 20, 30)
    assert out.shape == (1, 30, 20, 3)
    torch.testing.assert_close(out, _pil_bilinear(square, 30, 30)[:, :, 5:25], atol=PIL_ATOL, rtol=0)


# --- the resize policy, checked against an independent implementation ---------------------------------------------

#: PIL resamples float ("F") images with double-precision filter weights, torch with float32 ones; the two agree to
#: float32 rounding (observed max difference 4e-6 over several up/down sizes). Another filter differs by ~0.1: kornia's
#: Gaussian-prefiltered resize, or LANCZOS.
PIL_ATOL = 2e-5


def _pil_bilinear(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """PIL's antialiased bilinear resize of each channel of an RGB IMAGE ``[B, H, W, 3]``, in float (no 8-bit)."""
    frames = []
    for frame in image.numpy().astype(np.float32):
        channels = [Image.fromarray(np.ascontiguousarray(frame[..., c])).resize((width, height), Image.BILINEAR)
                    for c in range(frame.shape[-1])]  # fmt: skip
        frames.append(np.stack([np.asarray(ch, dtype=np.float32) for ch in channels], axis=-1))
    return torch.from_numpy(np.stack(frames))


@pytest.mark.parametrize("size", [(23, 17), (64, 48), (101, 75), (40, 160)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_resize_policy_is_pils_antialiased_bilinear(size):
    # Smooth content plus a hard edge and a fine grating: enough structure that another filter would show.
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(64.0), indexing="ij")
    grating = 0.5 + 0.5 * torch.sin(xx * xx / 60 + yy / 3)
    image = torch.stack([grating, (xx > 30).float(), torch.rand(48, 64, generator=g)], dim=-1)[None]  # [1, H, W, 3]
    width, height = size
    resized = core_images._resize(image.permute(0, 3, 1, 2), height, width).permute(0, 2, 3, 1)
    torch.testing.assert_close(resized, _pil_bilinear(image, height, width).clamp(0, 1), atol=PIL_ATOL, rtol=0)


@pytest.mark.parametrize("size", [(40, 30), (96, 72)], ids=["down", "up"])
def test_fit_reference_and_garment_resize_like_pil(size):
    # A target with the source's aspect ratio (4:3) needs no crop and no padding: both paths are the plain resize.
    g = torch.Generator().manual_seed(4)
    image = torch.rand(2, 48, 64, 3, generator=g)
    width, height = size
    expected = _pil_bilinear(image, height, width).clamp(0, 1)
    torch.testing.assert_close(core_images.fit_reference(image, width, height), expected, atol=PIL_ATOL, rtol=0)
    torch.testing.assert_close(core_images.fit_garment(image, width, height), expected, atol=PIL_ATOL, rtol=0)


def test_fit_garment_matches_pil_resize_then_white_padding():
    g = torch.Generator().manual_seed(2)
    garment = torch.rand(1, 30, 50, 3, generator=g)
    # Into 40x41: ratio min(0.8, 1.367) = 0.8 -> 40x24; vertical diff 17 -> top 8, bottom 9.
    out = core_images.fit_garment(garment, 40, 41)
    expected = torch.ones(1, 41, 40, 3)
    expected[:, 8:32] = _pil_bilinear(garment, 24, 40).clamp(0, 1)
    torch.testing.assert_close(out, expected, atol=PIL_ATOL, rtol=0)


# --- whole video clips -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 4])
def test_fit_video_equals_fitting_each_frame_as_a_reference(channels):
    g = torch.Generator().manual_seed(3)
    clips = torch.rand(2, 3, 36, 50, channels, generator=g)  # [B, T, H, W, C]
    out = core_images.fit_video(clips, 32, 32)
    assert out.shape == (2, 3, 32, 32, 3)
    for b in range(2):
        for t in range(3):
            torch.testing.assert_close(out[b, t], core_images.fit_reference(clips[b, t][None], 32, 32)[0], atol=0, rtol=0)
    # One clip [T, H, W, C] is a batch of frames: same result as the first clip above.
    torch.testing.assert_close(core_images.fit_video(clips[0], 32, 32), out[0], atol=0, rtol=0)


def test_fit_video_rejects_other_layouts():
    with pytest.raises(ValueError, match=r"\[T, H, W, C\] or \[B, T, H, W, C\], got \(4, 4, 3\)"):
        core_images.fit_video(torch.rand(4, 4, 3), 8, 8)
    with pytest.raises(ValueError, match="width=0"):
        core_images.fit_video(torch.rand(1, 2, 4, 4, 3), 0, 8)


def test_fit_garment_scales_by_min_ratio_and_pads_white_floor_half():
    garment = torch.full((1, 20, 40, 3), 0.2)  # 40 wide, 20 high
    # Into 64x63: ratio min(1.6, 3.15) = 1.6 -> 64x32; vertical diff 31 -> top 15, bottom 16.
    out = core_images.fit_garment(garment, 64, 63)
    assert out.shape == (1, 63, 64, 3)
    assert torch.all(out[:, :15] == 1.0) and torch.all(out[:, 47:] == 1.0)
    torch.testing.assert_close(out[:, 15:47], torch.full((1, 32, 64, 3), 0.2))

    # Transposed case: 20 wide, 40 high into 63x64 -> 32x64; horizontal diff 31 -> left 15, right 16.
    out = core_images.fit_garment(garment.transpose(1, 2), 63, 64)
    assert out.shape == (1, 64, 63, 3)
    assert torch.all(out[:, :, :15] == 1.0) and torch.all(out[:, :, 47:] == 1.0)
    torch.testing.assert_close(out[:, :, 15:47], torch.full((1, 64, 32, 3), 0.2))


def test_fit_garment_rgba_background_becomes_white_and_exact_size_is_untouched():
    rgba = torch.rand(1, 32, 32, 4)
    rgba[..., 3] = 0.0
    out = core_images.fit_garment(rgba, 32, 32)
    torch.testing.assert_close(out, torch.ones(1, 32, 32, 3))
    rgb = torch.rand(2, 32, 48, 3)
    torch.testing.assert_close(core_images.fit_reference(rgb, 48, 32), rgb)
    torch.testing.assert_close(core_images.fit_garment(rgb, 48, 32), rgb)


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (torch.rand(4, 4, 3), ValueError, "batch axis"),
        (torch.rand(1, 4, 4, 5), ValueError, "C in 1..4"),
        (torch.zeros(1, 4, 4, 3, dtype=torch.uint8), TypeError, "255"),
        ("not an image", TypeError, "str"),
    ],
)
def test_bad_images_are_rejected_with_the_fix(bad, error, words):
    with pytest.raises(error, match=words):
        core_images.to_rgb(bad)


def test_bad_sizes_and_videos_are_rejected():
    with pytest.raises(ValueError, match="width=0"):
        core_images.fit_reference(torch.rand(1, 4, 4, 3), 0, 8)
    with pytest.raises(ValueError, match=r"got \(1, 4, 4, 3\)"):
        video_to_image(torch.rand(1, 4, 4, 3))


# --- issue 13: load_image and IMAGE range checks ----------------------------------------------------------------------


def _png16(path, arr):
    """Write a 16-bit PNG (grey or RGB) by hand: PIL cannot write 16-bit RGB."""
    import struct
    import zlib

    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2 if arr.ndim == 3 else 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) +
                     chunk(b"IEND", b""))


@pytest.mark.parametrize("rgb", [False, True])
def test_16_bit_png_is_scaled_by_its_own_range(tmp_path, rgb):
    values = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    arr = np.stack([values] * 3, -1) if rgb else values
    _png16(tmp_path / "x.png", arr)
    image = core_images.load_image(tmp_path / "x.png")
    want = torch.tensor(values / 65535.0, dtype=torch.float32)
    got = image[0, :, :, 0]
    torch.testing.assert_close(got, want, atol=1 / 255, rtol=0)  # 16-bit RGB is reduced to 8 bits by PIL
    assert 0.45 < float(got[1, 0]) < 0.55  # not the almost-white of a clipped convert("RGB")


def test_exif_orientation_is_applied_as_comfyuis_loadimage(tmp_path):
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = 255  # left half white: 40 wide, 20 high as stored
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    image = core_images.load_image(tmp_path / "phone.jpg")
    assert image.shape == (1, 40, 20, 3)  # upright: as ImageOps.exif_transpose (ComfyUI's LoadImage) shows it
    assert image[0, :20].mean() > 0.9 and image[0, 20:].mean() < 0.1  # the white half is now on top


def test_float_image_in_0_255_is_refused_not_clamped():
    with pytest.raises(ValueError, match=r"reference image has values up to 25\d.*0\.\.255.*divide it by 255"):
        core_images.fit_reference(torch.rand(1, 8, 8, 3) * 255, 8, 8)
    with pytest.raises(ValueError, match="garment image holds NaN"):
        core_images.fit_garment(torch.full((1, 8, 8, 3), float("nan")), 8, 8)
    core_images.fit_reference(torch.rand(1, 8, 8, 3) * 1.01, 8, 8)  # a small overshoot is clamped as before


def test_decompression_bomb_and_unreadable_files_are_one_error(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    Image.new("L", (300, 300)).save(tmp_path / "big.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 200 * 200)  # a 15000x15000 PNG, scaled down for the test
    with pytest.raises(core_images.ImageFileError, match=r"big\.png is too large.*scale it down.*90000 pixels"):
        core_images.load_image(tmp_path / "big.png")
    Image.new("L", (250, 250)).save(tmp_path / "large.png")  # over the limit, under PIL's own 2x error
    with pytest.raises(core_images.ImageFileError, match=r"large\.png is too large.*62500 pixels"):
        core_images.load_image(tmp_path / "large.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(core_images.ImageFileError, match=r"notes\.png is not an image.*PNG, JPEG"):
        core_images.load_image(tmp_path / "notes.png")
    with pytest.raises(core_images.ImageFileError, match=r"image not found: .*gone\.png.*check the path"):
        core_images.load_image(tmp_path / "gone.png")
    assert issubclass(core_images.ImageFileError, ValueError)
