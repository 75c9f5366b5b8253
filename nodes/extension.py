"""The pack's single ComfyUI entry point: one ComfyExtension listing every node."""

from __future__ import annotations

import logging

from comfy_api.latest import ComfyExtension, io

from . import demo_files
from .conditions import ChameleonConditionsNode, ChameleonVideoSizeNode
from .decode import ChameleonSegmentJoin, ChameleonStreamDecode
from .live import ChameleonLiveStream
from .live_routes import register as register_live_routes
from .loaders import (
    ChameleonNativeModel,
    ChameleonPromptEmbeddings,
    ChameleonStudentLoader,
    ChameleonTeacherLoader,
    ChameleonTinyDecoderLoader,
    ChameleonVAELoader,
)
from .options import (
    ChameleonConditionWeighting,
    ChameleonLocalAttention,
    ChameleonMotionTransfer,
    ChameleonVideoTryOn,
    ChameleonVideoTryOnKeyframes,
)
from .stream_nodes import (
    ChameleonGarmentSwitch,
    ChameleonPromptSwitch,
    ChameleonStreamGenerate,
    ChameleonStreamStart,
)
from .teacher import ChameleonTeacherSampler

NODES: list[type[io.ComfyNode]] = [
    ChameleonTeacherLoader,
    ChameleonStudentLoader,
    ChameleonNativeModel,
    ChameleonTinyDecoderLoader,
    ChameleonVAELoader,
    ChameleonPromptEmbeddings,
    ChameleonConditionsNode,
    ChameleonVideoSizeNode,
    ChameleonTeacherSampler,
    ChameleonStreamStart,
    ChameleonStreamGenerate,
    ChameleonGarmentSwitch,
    ChameleonPromptSwitch,
    ChameleonStreamDecode,
    ChameleonSegmentJoin,
    ChameleonLiveStream,
    ChameleonVideoTryOn,
    ChameleonVideoTryOnKeyframes,
    ChameleonMotionTransfer,
    ChameleonConditionWeighting,
    ChameleonLocalAttention,
]

register_live_routes()  # the live node's routes on ComfyUI's server, once, when ComfyUI loads the pack
logging.getLogger(__name__).info("FashionChameleon demo files: %s",  # model folders and input images, no command
                                 "; ".join(demo_files.register()) or "none found")


class FashionChameleonExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> FashionChameleonExtension:
    return FashionChameleonExtension()
