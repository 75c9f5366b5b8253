"""The pack's shipped demo files, found by ComfyUI with no command.

``demo/models/<folder>/`` (the demo student, VAE and prompt features) is added to ComfyUI's model folders with
``folder_paths.add_model_folder_path``, so the ordinary loader dropdowns list the files beside the user's own and
the ``demo*`` templates load them as they are. The demo images (``demo/input/fashionchameleon_demo_*.png``) are copied
into ComfyUI's input folder when the pack loads, where absent: that is where a ComfyUI user looks for and replaces
input images, where the core Load Image lists and previews them, and where the live widget's garment picker and
``POST /chameleon/live/{session}/switch`` read garments. An image already there is never overwritten (the user may
have replaced it; deleting it brings the pack's copy back at the next start).

The names and folders come from :mod:`chameleon_core.tools.demo_models` (``FILES``, ``IMAGES``, ``PACK_DEMO``).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..chameleon_core.tools import demo_models
from .adapters.model_files import prompt_embedding_names

logger = logging.getLogger(__name__)


def register(demo: Path = demo_models.PACK_DEMO) -> list[str]:
    """Add ``demo/models/<folder>`` to ComfyUI's model folders (after the user's own, so a file of the same name in
    ``ComfyUI/models`` wins) and copy the missing demo images into the input folder. Returns what it did, for the
    log. Never raises: a pack without its demo files still loads."""
    import folder_paths

    done = []
    prompt_embedding_names()  # registers models/prompt_embeddings first, with its .safetensors filter
    for relative in demo_models.FILES.values():
        folder_name = relative.split("/")[0]
        path = demo / "models" / folder_name
        if not path.is_dir():
            logger.warning("FashionChameleon demo: %s is missing; the demo templates will not find their files", path)
            continue
        folder_paths.add_model_folder_path(folder_name, str(path))
        done.append(f"{folder_name} += {path}")
    try:
        target = Path(folder_paths.get_input_directory())
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        logger.warning("FashionChameleon demo: no input folder (%s); the demo images were not copied", e)
        return done
    copied = []
    for name in demo_models.IMAGES:
        src, dst = demo / "input" / name, target / name
        if dst.exists() or not src.is_file():
            continue
        try:
            shutil.copyfile(src, dst)
            copied.append(name)
        except OSError as e:  # a read-only input folder: the demo templates then name the missing image
            logger.warning("FashionChameleon demo: could not copy %s into %s: %s", name, target, e)
    if copied:
        done.append(f"copied {', '.join(copied)} into {target}")
    return done
