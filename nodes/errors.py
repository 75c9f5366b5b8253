"""User-facing node errors: each names the node, the input, the value received and the fix.

The texts are read by people in the browser and by programs calling ComfyUI's HTTP API alike, so a fix says what to
change in the workflow or on disk, never which button to press in the browser."""

from __future__ import annotations

from ..chameleon_core.tools.demo_models import STUDENT as DEMO_STUDENT

NOT_PUBLIC = {
    "student": ("the FashionChameleon student weights are not public: load instead the pack's demo student "
                f"{DEMO_STUDENT!r} (it ships in the pack's demo/ folder and is listed with the diffusion models; "
                "the demo_live template uses it), a student you trained (python -m chameleon_core.training), or a "
                "public causal Wan student (LongLive 2.0 for Wan2.2; Self-Forcing or CausVid for Wan2.1, with the "
                "Wan2.1 VAE)"),
    "teacher": ("the FashionChameleon teacher weights are not public: load instead a teacher you trained (python -m "
                "chameleon_core.training sft), or the base model wan2.2_ti2v_5B_fp16.safetensors "
                "(Comfy-Org/Wan_2.2_ComfyUI_Repackaged), which runs but was never trained on reference and garment "
                "frames"),
}
"""What to load instead of the FashionChameleon weights, by model kind: added to a missing student / teacher file."""


def node_error(node: str, input_name: str, value: object, problem: str, fix: str) -> ValueError:
    """``ValueError("<node>: input '<input>' got <value>: <problem>. Fix: <fix>")``."""
    shown = value if isinstance(value, (int, float, str, bool, type(None))) else type(value).__name__
    problem = problem.rstrip().rstrip(".")  # core messages end in a full stop; one before "Fix:" is enough
    return ValueError(f"{node}: input '{input_name}' got {shown!r}: {problem}. Fix: {fix}")


def rewrap(node: str, input_name: str, value: object, err: Exception, fix: str) -> ValueError:
    """A core ValueError re-raised with the node and input that caused it."""
    return node_error(node, input_name, value, str(err), fix)
