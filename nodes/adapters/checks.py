"""Wrong connections -> node errors: each check names the node, the input, what it got and the fix."""

from __future__ import annotations

from ...chameleon_core.latents import LatentFamily
from ...chameleon_core.profiles import PROFILES
from ..errors import node_error
from ..types import ChameleonConditions, ChameleonModel, ChameleonStream
from .vae import vae_family


def check_conditions(node: str, model: ChameleonModel, conditions: ChameleonConditions) -> LatentFamily:
    """The conditions were encoded with the VAE family the model takes; returns that family."""
    family = model.config.latent
    if conditions.family is not None and conditions.family != family.name:
        raise node_error(node, "conditions", conditions.family,
                         f"encoded with the {conditions.family} VAE but the model takes {family.name} latents",
                         f"feed ChameleonConditions the {family.name} VAE")
    return family


def check_student(node: str, name: str, model: ChameleonModel) -> None:
    """``model`` is a causal student (a teacher cannot stream)."""
    if model.kind != "student":
        raise node_error(node, name, model.name, "this is the bidirectional teacher, it cannot stream",
                         "load a causal student with ChameleonStudentLoader (or sample the teacher with "
                         "ChameleonTeacherSampler)")


def check_teacher(node: str, name: str, model: ChameleonModel) -> None:
    """``model`` is the bidirectional teacher."""
    if model.kind != "teacher":
        raise node_error(node, name, model.name, "this is a causal student, not the bidirectional teacher",
                         "load the teacher with ChameleonTeacherLoader, or stream the student with "
                         "ChameleonStreamStart")


def check_person_conditions(node: str, model: ChameleonModel, conditions: ChameleonConditions) -> None:
    """The conditions hold a reference and a garment (the teacher and FashionChameleon streams need them)."""
    if not conditions.has_person:
        raise node_error(node, "conditions", "no reference / garment",
                         f"{model.name} takes a person (reference) and a garment in context",
                         "connect ChameleonConditions (reference and garment images), not ChameleonVideoSize")


def check_garment_stream(node: str, stream: ChameleonStream) -> None:
    """The stream has a garment to switch (a FashionChameleon stream, not a public student's text-to-video)."""
    if not stream.state.settings.conditions:
        prof = PROFILES.get(stream.model.profile)
        raise node_error(node, "stream", stream.model.name,
                         f"this stream has no garment: it streams {prof.title if prof else 'a public student'} "
                         "(text-/image-to-video, no reference or garment)",
                         "switch its prompt with ChameleonPromptSwitch, or stream a FashionChameleon student")


def check_student_stream(node: str, stream: ChameleonStream) -> None:
    """``stream`` is a CHAMELEON_STREAM of a causal student."""
    if not isinstance(stream, ChameleonStream):
        raise node_error(node, "stream", stream, "not a FashionChameleon stream", "connect ChameleonStreamStart")
    if stream.model.kind != "student":
        raise node_error(node, "stream", stream.model.name, "this stream comes from the bidirectional teacher, which "
                         "cannot stream or switch garments", "start the stream from ChameleonStudentLoader's model")


def check_vae(node: str, vae, want: LatentFamily) -> LatentFamily:
    """``vae`` is a Wan VAE of the family ``want`` (the model's); returns it."""
    family = vae_family(node, vae)
    if family.name != want.name:
        raise node_error(node, "vae", family.name, f"the model takes {want.name} latents",
                         f"connect the {want.name} VAE")
    return family


def check_resolution(node: str, family: LatentFamily, width: int, height: int) -> None:
    """Width and height fit the VAE stride and the DiT's 2x2 patches."""
    step = family.spatial_stride * 2
    for name, value in (("width", width), ("height", height)):
        if value % step:
            raise node_error(node, name, value, f"not a multiple of {step} ({family.name} VAE + 2x2 patches)",
                             f"use {round(value / step) * step or step}")
