"""ChameleonTeacherSampler: the bidirectional in-context teacher (UniPC / Euler, CFG with a negative prompt)."""

from __future__ import annotations

from comfy_api.latest import io

from ..chameleon_core.samplers import sample_teacher
from .adapters.checks import check_conditions, check_person_conditions, check_teacher
from .adapters.stream_options import teacher_weights
from .adapters.values import conditioning_tensor
from .progress import ChunkProgress, interrupted, raise_if_interrupted
from .sockets import ConditionsSocket, ModelSocket, with_aliases
from .types import ChameleonConditions, ChameleonModel


class ChameleonTeacherSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            node_id="ChameleonTeacherSampler",
            display_name="FashionChameleon Teacher Sampler",
            category="FashionChameleon/sampling",
            description="Samples a whole clip with the bidirectional teacher: [reference, garment, video] in one "
                        "attention, flow-matching UniPC (the paper's 50 steps, shift 5, CFG 3).",
            inputs=[
                ModelSocket.Input("teacher", tooltip="From ChameleonTeacherLoader (bidirectional)."),
                io.Conditioning.Input("positive", tooltip="CLIPTextEncode with a CLIPLoader of type wan (umT5-XXL)."),
                io.Conditioning.Input("negative", tooltip="Negative prompt, same encoder; used when cfg > 1."),
                ConditionsSocket.Input("conditions", tooltip="From ChameleonConditions, with the model's VAE."),
                io.Int.Input("frames", default=81, min=1, max=1025, step=4,
                             tooltip="Video frames; 4k+1 (81 = 21 latent frames, the training length)."),
                io.Int.Input("steps", default=50, min=1, max=200, tooltip="Sampler steps (paper: 50)."),
                io.Float.Input("cfg", default=3.0, min=0.0, max=20.0, step=0.1,
                               tooltip="Classifier-free guidance; 1 skips the negative pass (paper: 3.0)."),
                io.Float.Input("shift", default=5.0, min=0.1, max=20.0, step=0.1,
                               tooltip="Sigma shift of the flow schedule (5 for Wan2.2-TI2V-5B at 704p)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; the same seed gives the same video on any device."),
                io.Combo.Input("sampler", options=["unipc", "euler"], default="unipc",
                               tooltip="unipc: flow UniPC (order 2, bh2), the paper's; euler: plain flow Euler."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        ))

    @classmethod
    def execute(cls, teacher: ChameleonModel, positive, negative, conditions: ChameleonConditions, frames: int,
                steps: int, cfg: float, shift: float, seed: int, sampler: str) -> io.NodeOutput:
        node = "ChameleonTeacherSampler"
        check_teacher(node, "teacher", teacher)
        family = check_conditions(node, teacher, conditions)
        check_person_conditions(node, teacher, conditions)
        positive = conditioning_tensor(node, "positive", positive)
        negative = conditioning_tensor(node, "negative", negative) if cfg != 1 else None
        progress = ChunkProgress(steps)
        out = sample_teacher(
            teacher.load(), positive=positive, negative=negative, reference=conditions.reference,
            garment=conditions.garment, latent_frames=family.latent_frames(frames), steps=steps, cfg=cfg, shift=shift,
            seed=seed, sampler=sampler, callback=progress, should_stop=interrupted,
            condition_weights=teacher_weights(node, teacher, steps),
        )
        raise_if_interrupted()  # a stop returns the last completed (still noisy) latents: not a result
        return io.NodeOutput({"samples": family.to_raw(out.float()).cpu()})
