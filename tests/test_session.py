"""The session loop (chameleon_core/session.py): one loop for the command line, the benchmark and the nodes.

Checked against independent compositions of the core operations (generate, switch_garment, a whole-video VAE
decode) and against the command line's own output; switches from a thread-safe queue land where a timeline puts
them; a stop ends the session between chunks with a usable state.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from chameleon_core.checkpoints import load_transformer, load_vae
from chameleon_core.config import StreamSettings
from chameleon_core.images import fit_garment, load_image
from chameleon_core.latents import WAN22
from chameleon_core.rescheduling import switch_garment
from chameleon_core.session import (
    STOP,
    GarmentSwitch,
    Session,
    TimedSwitch,
    encode_condition,
)
from chameleon_core.streaming import generate, start_stream
from tests.tiny_models import tiny_transformer
from chameleon_core.checkpoints.layout_writers import write_transformer_checkpoint
from chameleon_core.text import load_prompt_embeddings, save_prompt_embeddings
from chameleon_core.tools.tiny_checkpoints import write_images, write_vae
from chameleon_core.tools import stream as cli

SIZE = 64
SETTINGS = StreamSettings(chunk_frames=3, cache_frames=23)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("session")
    write_images(d, size=SIZE)
    gen = torch.Generator().manual_seed(0)
    student = write_transformer_checkpoint(tiny_transformer(seed=0), d / "tiny_student.safetensors")
    vae_path = d / "wan2.2_vae.safetensors"
    write_vae(vae_path, seed=0)
    prompt = save_prompt_embeddings(d / "prompt.safetensors", torch.randn(8, 64, generator=gen), "walks")
    model = load_transformer(student, dtype=torch.float32)
    vae = load_vae(vae_path, dtype=torch.float32)
    context = load_prompt_embeddings(prompt, text_dim=model.config.text_dim)
    ref = encode_condition(vae, WAN22, load_image(d / "reference.png"), garment=False, size=(SIZE, SIZE))
    gar = encode_condition(vae, WAN22, load_image(d / "garment1.png"), garment=True, size=(SIZE, SIZE))
    return {"dir": d, "student": student, "vae_path": vae_path, "prompt": prompt, "model": model, "vae": vae, "context": context,
                "ref": ref, "gar": gar}


def _start(world, seed=3):
    return start_stream(world["model"], context=world["context"], reference=world["ref"], garment=world["gar"],
                        seed=seed, settings=SETTINGS)


def _garment2(world):
    return load_image(world["dir"] / "garment2.png")


def test_session_equals_generate_switch_and_one_whole_decode(world):
    """Direct call vs an independent composition: generate, switch (disentangle from a full decode), generate, and
    one decode of the whole latent video."""
    session = Session(_start(world), chunks=3, codec=world["vae"],
                      timeline=[TimedSwitch(2, GarmentSwitch(_garment2(world), label="garment2"))])
    chunks = session.run()
    pixels = torch.cat([c.pixels for c in chunks], dim=2)

    state, first = generate(_start(world), 6)
    new_garment = encode_condition(world["vae"], WAN22, _garment2(world), garment=True, size=(SIZE, SIZE))
    state = switch_garment(state, new_garment, codec=world["vae"])  # disentangle decodes the whole stream
    state, last = generate(state, 3)
    # the full switch started a new clip: its latents decode as a new video, whose first frame is not shown
    assert state.clip_starts == (6,)
    video = torch.cat([world["vae"].decode(WAN22.to_raw(first)), world["vae"].decode(WAN22.to_raw(last))[:, :, 1:]],
                      dim=2)
    torch.testing.assert_close(pixels, video, atol=1e-5, rtol=0)
    torch.testing.assert_close(session.state.latents(), state.latents(), atol=1e-6, rtol=0)
    assert [(s.kind, s.chunk, s.video_frame) for s in session.applied] == [("garment", 2, 21)]
    assert [c.first_video_frame for c in chunks] == [0, 9, 21]


def test_session_matches_the_command_line_frames(world, tmp_path):
    """The CLI path and a direct call give the same frames (the CLI writes 8-bit PNGs)."""
    out = tmp_path / "frames"
    code = cli.main(["--student", str(world["student"]), "--vae", str(world["vae_path"]), "--prompt-embeds",
                     str(world["prompt"]), "--reference", str(world["dir"] / "reference.png"), "--garment",
                     str(world["dir"] / "garment1.png"), "--width", str(SIZE), "--height", str(SIZE), "--frames", "29",
                     "--seed", "3", "--switch", f"12:{world['dir'] / 'garment2.png'}", "--out", str(out)])
    assert code == 0
    cli_frames = np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("frame_*.png"))])
    session = Session(_start(world), chunks=3, codec=world["vae"],
                      timeline=[TimedSwitch(2, GarmentSwitch(fit_garment(_garment2(world), SIZE, SIZE)))])
    direct = np.concatenate([cli.to_uint8_frames(c.pixels) for c in session])
    np.testing.assert_array_equal(cli_frames, direct)


def test_queued_switch_lands_at_the_next_boundary_like_a_timeline_switch(world):
    timed = Session(_start(world), chunks=4, codec=world["vae"],
                    timeline=[TimedSwitch(2, GarmentSwitch(_garment2(world)))]).run()
    commands: queue.Queue = queue.Queue()
    live = Session(_start(world), chunks=4, codec=world["vae"], commands=commands)
    got = []
    for chunk in live:
        got.append(chunk)
        if chunk.index == 1:  # pushed from another thread while the session runs; applied before chunk 2
            t = threading.Thread(target=commands.put, args=(GarmentSwitch(_garment2(world)),))
            t.start()
            t.join()
    for a, b in zip(timed, got, strict=True):
        torch.testing.assert_close(a.pixels, b.pixels, atol=0, rtol=0)
    assert [c.switches and c.switches[0].chunk for c in got] == [(), (), 2, ()]


def test_stop_ends_between_chunks_with_a_usable_state(world):
    commands: queue.Queue = queue.Queue()
    session = Session(_start(world), chunks=None, codec=world["vae"], commands=commands)
    for chunk in session:
        if chunk.index == 1:
            commands.put(STOP)
    assert session.done == 2 and session.stopped and session.state.latent_frames == 6
    # The state continues exactly as an uninterrupted run would.
    full = Session(_start(world), chunks=3, codec=world["vae"], decode=False).run()
    _, nxt = generate(session.state, 3)
    torch.testing.assert_close(nxt, full[2].latents, atol=0, rtol=0)
    # should_stop is polled between chunks and between denoising steps: a stop once two chunks are done
    stopped = Session(_start(world), chunks=5, decode=False, should_stop=lambda: stopped.done >= 2)
    assert len(stopped.run()) == 2 and stopped.stopped


def test_a_stop_between_denoising_steps_ends_the_session_with_the_chunks_before_it(world):
    """A stop polled inside a chunk (between its steps) drops that chunk: the session hands over the chunks before
    it, and its state continues exactly as an uninterrupted run."""
    polls: list[int] = []

    def stop_inside_chunk_three() -> bool:
        if stopped.done == 2:
            polls.append(1)
        return len(polls) >= 2  # the boundary poll after chunk 2 says no; the first poll inside chunk 3 says stop

    stopped = Session(_start(world), chunks=5, decode=False, should_stop=stop_inside_chunk_three)
    got = stopped.run()
    assert [c.index for c in got] == [0, 1] and stopped.stopped and stopped.state.latent_frames == 6
    full = Session(_start(world), chunks=3, decode=False).run()
    _, nxt = generate(stopped.state, 3)
    torch.testing.assert_close(nxt, full[2].latents, atol=0, rtol=0)


def test_bad_sessions_are_refused(world):
    with pytest.raises(ValueError, match="at least one chunk"):
        Session(_start(world), chunks=0, decode=False)
    with pytest.raises(ValueError, match="until stopped"):
        Session(_start(world), chunks=None, decode=False)
    with pytest.raises(ValueError, match="codec"):
        Session(_start(world), chunks=2)
    with pytest.raises(ValueError, match="boundaries"):
        Session(_start(world), chunks=2, decode=False, timeline=[TimedSwitch(2, GarmentSwitch(_garment2(world)))])


# --- the live-path options: overlapped decode, another decoder (issue 15) ------------------------------------------


def test_overlapped_decode_equals_the_serial_loop_bitwise(world):
    timeline = [TimedSwitch(2, GarmentSwitch(_garment2(world)))]
    serial = Session(_start(world), chunks=4, codec=world["vae"], timeline=timeline).run()
    overlapped = Session(_start(world), chunks=4, codec=world["vae"], timeline=timeline, overlap_decode=True)
    got = overlapped.run()
    assert [c.index for c in got] == [0, 1, 2, 3]
    for a, b in zip(serial, got, strict=True):
        assert torch.equal(a.pixels, b.pixels) and torch.equal(a.latents, b.latents)
        assert a.first_video_frame == b.first_video_frame and len(a.switches) == len(b.switches)
    torch.testing.assert_close(overlapped.state.latents(), torch.cat([c.latents for c in serial], 2), atol=0, rtol=0)
    # A stop hands over every generated chunk, in order, and the state holds exactly those.
    stopped = Session(_start(world), chunks=None, codec=world["vae"], should_stop=lambda: stopped.done >= 3,
                      overlap_decode=True)
    chunks = stopped.run()
    assert [c.index for c in chunks] == [0, 1, 2] and stopped.stopped and stopped.state.latent_frames == 9
    for a, b in zip(serial[:2], chunks):  # before the serial run's switch
        assert torch.equal(a.pixels, b.pixels)


def test_tiny_decoder_decodes_while_the_full_vae_encodes_the_shown_frame(world):
    """decoder=tiny: pixels are the tiny decoder's continuous decode; disentangle re-encodes its last frame with the
    full VAE (checked against switch_garment given that frame)."""
    from chameleon_core.taehv import TAEHVConfig, random_taehv

    tiny = random_taehv(TAEHVConfig(latent_channels=48, patch_size=2, widths=(16, 8, 8, 4)), seed=0)
    garment = GarmentSwitch(_garment2(world))
    session = Session(_start(world), chunks=3, codec=world["vae"], decoder=tiny, timeline=[TimedSwitch(2, garment)])
    chunks = session.run()
    # the switch started a new clip: its first chunk shows 8 frames (the clip's first latent frame is not shown)
    assert [c.pixels.shape[2] for c in chunks] == [9, 12, 8] and session.video_frames == 29
    assert chunks[0].pixels.shape[-2:] == (SIZE, SIZE)

    state, first = generate(_start(world), 6)
    shown = tiny.decode_model_space(first)[0]
    torch.testing.assert_close(torch.cat([c.pixels for c in chunks[:2]], 2), shown, atol=0, rtol=0)
    new_garment = encode_condition(world["vae"], WAN22, _garment2(world), garment=True, size=(SIZE, SIZE))
    state = switch_garment(state, new_garment, codec=world["vae"], last_frame=shown[:, :, -1])
    state, last = generate(state, 3)
    torch.testing.assert_close(chunks[2].latents, last, atol=1e-6, rtol=0)
    # the switch started a new clip: decoded as a new video, its first frame not shown
    torch.testing.assert_close(chunks[2].pixels, tiny.decode_model_space(last)[0][:, :, 1:], atol=1e-6, rtol=0)


def test_a_failing_chunk_raises_its_own_error_and_keeps_the_last_complete_state(world):
    """A NaN chunk inside a session ends it with NonFiniteChunkError (not an internal error), the session's state is
    the last complete one, and continuing from it gives the frames of a run that never failed."""
    from chameleon_core.streaming import NonFiniteChunkError

    model = world["model"]
    full = Session(_start(world), chunks=3, decode=False).run()
    calls = []

    def poison(module, args, out):
        calls.append(1)
        return out * float("nan") if len(calls) == 2 * 5 + 1 else out  # the first pass of chunk 2

    session = Session(_start(world), chunks=3, decode=False)
    handed = []
    hook = model.head.register_forward_hook(poison)
    try:
        with pytest.raises(NonFiniteChunkError, match="NaN"):
            for chunk in session:
                handed.append(chunk)
    finally:
        hook.remove()
    assert len(handed) == 2 and session.state.latent_frames == 6
    _, nxt = generate(session.state, 3)
    torch.testing.assert_close(nxt, full[2].latents, atol=0, rtol=0)
    # Latents handed out never share storage with the state's history.
    handed[-1].latents.mul_(0)
    assert session.state.history[-1].abs().sum() > 0


def test_a_session_from_a_later_state_continues_the_video(world):
    """Started from a stream that already has frames, the session decodes as the continuous video does (its first
    chunk is 12 frames, not a restart's 9), and disentangle at its first boundary equals the whole-stream decode."""
    later, first = generate(_start(world), 6)
    session = Session(later, chunks=2, codec=world["vae"],
                      timeline=[TimedSwitch(1, GarmentSwitch(_garment2(world)))])
    chunks = session.run()
    assert [c.first_video_frame for c in chunks] == [0, 12] and chunks[0].pixels.shape[2] == 12
    state, more = generate(later, 3)
    new_garment = encode_condition(world["vae"], WAN22, _garment2(world), garment=True, size=(SIZE, SIZE))
    state = switch_garment(state, new_garment, codec=world["vae"])
    state, last = generate(state, 3)
    video = world["vae"].decode(WAN22.to_raw(torch.cat([first, more], dim=2)))
    new_clip = world["vae"].decode(WAN22.to_raw(last))[:, :, 1:]  # the switch's new clip: its first frame not shown
    torch.testing.assert_close(torch.cat([c.pixels for c in chunks], dim=2),
                               torch.cat([video[:, :, -12:], new_clip], dim=2), atol=1e-5, rtol=0)


def test_a_session_from_a_switched_state_decodes_the_new_clip_without_its_past(world):
    """A session started right after a switch that began a new clip (no decoder handed over) decodes the clip alone,
    its first frame not shown: the same frames as one session that switched itself."""
    head = Session(_start(world), chunks=2, codec=world["vae"])
    head.run()
    new_garment = encode_condition(world["vae"], WAN22, _garment2(world), garment=True, size=(SIZE, SIZE))
    switched = switch_garment(head.state, new_garment, codec=world["vae"], last_frame=head.decoder.last_frame)
    assert switched.opens_clip
    tail = Session(switched, chunks=2, codec=world["vae"]).run()
    assert [c.first_video_frame for c in tail] == [0, 8]
    latents = torch.cat([c.latents for c in tail], dim=2)
    torch.testing.assert_close(torch.cat([c.pixels for c in tail], dim=2),
                               world["vae"].decode(WAN22.to_raw(latents))[:, :, 1:], atol=1e-5, rtol=0)


def test_continuing_a_sessions_decoder_equals_one_session_and_forks_twice(world):
    """A session of 4 chunks switching at chunk 2 equals a 2-chunk session followed by a session from its state that
    continues its decoder (``continue_decode``) and switches at its chunk 0; the decoder can be continued twice
    (two branches after the same chunk), each equal to the whole session, and the first branch is unchanged."""
    switch = GarmentSwitch(_garment2(world), label="garment2")
    whole = Session(_start(world), chunks=4, codec=world["vae"], timeline=[TimedSwitch(2, switch)]).run()
    head_session = Session(_start(world), chunks=2, codec=world["vae"])
    head = head_session.run()
    branches = []
    for _ in range(2):
        tail_session = Session(head_session.state, chunks=2, codec=world["vae"], timeline=[TimedSwitch(0, switch)],
                               continue_decode=head_session.decoder)
        branches.append(tail_session.run())
        assert [c.first_video_frame for c in branches[-1]] == [0, 8]  # counted from this session's start (new clip)
        assert [s.video_frame for s in tail_session.applied] == [0]
    for tail in branches:
        got = torch.cat([c.pixels for c in head + tail], dim=2)
        torch.testing.assert_close(got, torch.cat([c.pixels for c in whole], dim=2), atol=0, rtol=0)
    with pytest.raises(ValueError, match="continue_decode has decoded 6 latent frames but the stream has 0"):
        Session(_start(world), chunks=1, codec=world["vae"], continue_decode=head_session.decoder)
    with pytest.raises(ValueError, match=r"outside the session's boundaries \(1\.\."):
        Session(_start(world), chunks=2, codec=world["vae"], timeline=[TimedSwitch(0, switch)])
