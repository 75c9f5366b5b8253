"""Model-based scorers of :mod:`.hgc`, each loaded from files the user gives; nothing is downloaded.

- :class:`ImageEncoder`: CLIP (``CLIPModel``) or DINOv2 (``Dinov2Model``) image embeddings, L2-normalised, from a
  LOCAL transformers folder (``from_pretrained(folder, local_files_only=True)``; transformers is the pack's optional
  ``text`` extra). CLIP: the projected image embedding; DINOv2: the layer-normed CLS token (``pooler_output``).
  Preprocessing is the models' standard one (resize the short side with bicubic, centre crop, normalise), read from
  the folder's ``preprocessor_config.json`` when present, else CLIP's / DINOv2's published defaults.
- :class:`AestheticPredictor`: the LAION improved aesthetic predictor (christophschuhmann/improved-aesthetic-
  predictor, the same MLP the authors' GR-DMD reward uses): ``768 -> 1024 -> 128 -> 64 -> 16 -> 1`` linear layers over
  L2-normalised CLIP ViT-L/14 image embeddings, so it needs the CLIP folder too. Weights from ``.safetensors`` or a
  plain state-dict ``.pth`` read with ``torch.load(weights_only=True)``.
- :class:`FaceEmbedder`: face identity with OpenCV only (no onnxruntime): the YuNet detector
  (``cv2.FaceDetectorYN``) finds the largest face and its five landmarks, a similarity transform aligns it to the
  standard 112x112 ArcFace template, and an ArcFace ONNX recogniser (e.g. insightface's ``w600k_r50.onnx``) run by
  ``cv2.dnn`` gives a 512-d embedding. OpenCV's wheels ship no face-detector weights, hence the second file.

Every missing file raises :class:`MissingModelFile`, whose message names the file and where to get it; a file that
exists but cannot be used raises :class:`ModelLoadError`. Both are the checkpoint package's one error type
(:class:`~chameleon_core.checkpoints.CheckpointError`): weight files are read through its reader (regular files only,
``.pth`` weights-only, NaN/inf weights refused), transformers folders have their files checked the same way first,
and no message ever suggests ``weights_only=False``.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoints.errors import CheckpointError, CheckpointNotFoundError, check_regular_file, first_line
from ..checkpoints.tensors import FiniteCheck
from ..checkpoints.weight_files import read_weight_file

logger = logging.getLogger(__name__)


class MissingModelFile(CheckpointNotFoundError):
    """A model file or folder the user pointed to (or that ``--models-dir`` should hold) is absent."""


class ModelLoadError(CheckpointError):
    """A model file exists but cannot be used (wrong kind of file, wrong shapes, a missing library)."""


@dataclass(frozen=True)
class ModelSource:
    flag: str
    """Command-line option naming it."""
    default_name: str
    """Its name inside ``--models-dir``."""
    what: str
    where: str
    """Where to get it."""
    is_folder: bool = False


MODEL_SOURCES: dict[str, ModelSource] = {
    "clip": ModelSource(
        "--clip", "clip", "a CLIP transformers folder (CLIPModel or CLIPVisionModelWithProjection; ViT-L/14 for the aesthetic "
        "score)", "huggingface.co/openai/clip-vit-large-patch14 (hf download openai/clip-vit-large-patch14 "
        "--local-dir DIR)", is_folder=True),
    "dino": ModelSource(
        "--dino", "dinov2", "a DINOv2 transformers folder (config.json + model.safetensors)",
        "huggingface.co/facebook/dinov2-base (hf download facebook/dinov2-base --local-dir DIR)", is_folder=True),
    "face": ModelSource(
        "--face", "arcface.onnx", "an ArcFace recogniser in ONNX (112x112 RGB input, 512-d output)",
        "insightface's buffalo_l model pack (github.com/deepinsight/insightface, model_zoo): w600k_r50.onnx"),
    "face_detector": ModelSource(
        "--face-detector", "face_detection_yunet_2023mar.onnx", "the YuNet face detector in ONNX",
        "github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet"),
    "aesthetic": ModelSource(
        "--aesthetic", "aesthetic.safetensors", "the LAION aesthetic predictor MLP weights (.safetensors or .pth)",
        "github.com/christophschuhmann/improved-aesthetic-predictor: sac+logos+ava1-l14-linearMSE.pth"),
}


def missing_message(key: str, path: Path) -> str:
    src = MODEL_SOURCES[key]
    return f"{src.flag}: {src.what} not found at {path}; get it from {src.where}"


def kind_problem(key: str, path: Path) -> str | None:
    """Why ``path`` cannot be the model ``key`` (missing, a file where a folder is due, a folder or a FIFO where a
    file is due), or None when it is of the right kind."""
    src = MODEL_SOURCES[key]
    if not path.exists():
        return missing_message(key, path)
    if src.is_folder:
        return None if path.is_dir() else (f"{src.flag}: {path} is a file; it should be {src.what} (a folder), from "
                                           f"{src.where}")
    try:
        check_regular_file(path, f"{src.flag} file", f"it should be {src.what}, from {src.where}")
    except CheckpointError as e:
        return str(e)
    return None


def check_exists(key: str, path: Path) -> None:
    """Raise :class:`MissingModelFile` for a missing ``path``, :class:`ModelLoadError` for one of the wrong kind."""
    problem = kind_problem(key, path)
    if problem is not None:
        raise (MissingModelFile if not path.exists() else ModelLoadError)(problem)


# -------------------------------------------------------------------------------------------------------------------
# CLIP / DINOv2 image embeddings
# -------------------------------------------------------------------------------------------------------------------

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side to ``short_side`` (bicubic), centre-crop ``crop`` (h, w), normalise."""

    short_side: int
    crop: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 RGB ``[H, W, 3]`` images -> ``[N, 3, crop_h, crop_w]`` float32."""
        from PIL import Image

        out = []
        for image in images:
            im = Image.fromarray(image)
            short, long_ = self.short_side, int(self.short_side * max(im.size) / min(im.size))  # floor, as HF
            w, h = (short, long_) if im.width <= im.height else (long_, short)
            w, h = max(w, self.crop[1]), max(h, self.crop[0])
            im = im.resize((w, h), Image.BICUBIC)
            left, top = (w - self.crop[1]) // 2, (h - self.crop[0]) // 2
            im = im.crop((left, top, left + self.crop[1], top + self.crop[0]))
            out.append(torch.from_numpy(np.asarray(im, np.float32) / 255.0).permute(2, 0, 1))
        x = torch.stack(out)
        return (x - torch.tensor(self.mean)[:, None, None]) / torch.tensor(self.std)[:, None, None]


def read_preprocess(folder: Path, default: Preprocess) -> Preprocess:
    """``default`` updated from ``folder/preprocessor_config.json`` (mean, std, size, crop) when the file exists."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return default
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {path} ({e}); fix or delete it (the defaults are then used)") from None

    def _hw(value, fallback):
        if isinstance(value, int):
            return value, value
        if isinstance(value, dict) and "height" in value:
            return int(value["height"]), int(value["width"])
        if isinstance(value, dict) and "shortest_edge" in value:
            return int(value["shortest_edge"]), int(value["shortest_edge"])
        return fallback

    size = cfg.get("size")
    short = size if isinstance(size, int) else (size or {}).get("shortest_edge", default.short_side)
    return Preprocess(int(short), _hw(cfg.get("crop_size"), default.crop),
                      tuple(cfg.get("image_mean", default.mean)), tuple(cfg.get("image_std", default.std)))


class ImageEncoder:
    """``embed(images) -> [N, D]`` L2-normalised image embeddings from a CLIP or DINOv2 model."""

    def __init__(self, name: str, forward, preprocess: Preprocess, dim: int, device: torch.device) -> None:
        self.name, self._forward, self.preprocess, self.dim, self.device = name, forward, preprocess, dim, device

    @torch.no_grad()
    def embed(self, images: Sequence[np.ndarray], batch: int = 16) -> torch.Tensor:
        """uint8 RGB images -> ``[N, dim]`` float32 unit vectors, on the CPU."""
        chunks = [self._forward(self.preprocess(images[i:i + batch]).to(self.device)).float().cpu()
                  for i in range(0, len(images), batch)]
        return nn.functional.normalize(torch.cat(chunks), dim=-1)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ModelLoadError("the CLIP / DINOv2 metrics need transformers, which is not installed: pip install "
                             "'transformers>=4.40' (the pack's optional 'text' extra)") from None
    return transformers


def _check_folder_files(folder: Path, key: str) -> None:
    """Every file transformers would read in ``folder`` is a regular file (a FIFO would block it forever)."""
    files = [folder / "config.json", folder / "preprocessor_config.json", *sorted(folder.glob("*.safetensors")),
             *sorted(folder.glob("*.bin")), *sorted(folder.glob("*.index.json"))]
    for f in files:
        if f.exists() or f.is_symlink():
            try:
                check_regular_file(f, f"{MODEL_SOURCES[key].flag} file", f"it should be {MODEL_SOURCES[key].what}")
            except CheckpointError as e:
                raise ModelLoadError(str(e)) from None


def _from_pretrained(cls, folder: Path, key: str):
    """``cls.from_pretrained(folder)`` (local files only) with NaN/inf weights refused; every failure is a
    :class:`ModelLoadError` naming the folder. transformers reads ``.bin`` weights with ``weights_only=True``; its
    advice to load with ``weights_only=False`` (which would run code from the file) is never passed on."""
    src = MODEL_SOURCES[key]
    _check_folder_files(folder, key)
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True).eval()
    except (ImportError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 -- transformers / safetensors / torch each raise their own types
        first = first_line(e)
        if isinstance(e, pickle.UnpicklingError):
            raise ModelLoadError(
                f"{src.flag}: refusing to load {folder}: a *.bin there holds pickled Python objects, not only tensors, "
                f"and unpickling them could run arbitrary code ({first}); use the model.safetensors release, from "
                f"{src.where}") from None
        raise ModelLoadError(f"{src.flag}: cannot load {cls.__name__} from {folder} ({type(e).__name__}: {first}); its "
                             f"files are missing, damaged or cut short, or it is not {src.what}: download it again "
                             f"from {src.where}") from None
    finite = FiniteCheck()
    for name, p in model.named_parameters():
        finite.add(name, p.detach())
    try:
        finite.check(f"{src.flag} {folder}")
    except CheckpointError as e:
        raise ModelLoadError(str(e)) from None
    return model


def load_clip(folder: Path, device: torch.device | str = "cpu") -> ImageEncoder:
    """A full CLIP folder (``CLIPModel``) or its image half alone (``CLIPVisionModelWithProjection``, config
    ``model_type: clip_vision_model``); the same projected image embedding either way."""
    check_exists("clip", folder)
    _check_folder_files(folder, "clip")
    transformers = _transformers()
    vision_only = _model_type(folder) == "clip_vision_model"
    cls = transformers.CLIPVisionModelWithProjection if vision_only else transformers.CLIPModel
    model = _from_pretrained(cls, folder, "clip").to(device)
    side = (model.config if vision_only else model.config.vision_config).image_size
    pre = read_preprocess(folder, Preprocess(side, (side, side), CLIP_MEAN, CLIP_STD))

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        # The projected pooled embedding, as get_image_features returns it (whose return type changed in v5).
        return model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)

    return ImageEncoder("clip", forward, pre, model.config.projection_dim, torch.device(device))


def _model_type(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None  # from_pretrained then says what is wrong with the folder


def load_dino(folder: Path, device: torch.device | str = "cpu") -> ImageEncoder:
    check_exists("dino", folder)
    model = _from_pretrained(_transformers().Dinov2Model, folder, "dino").to(device)
    pre = read_preprocess(folder, Preprocess(256, (224, 224), IMAGENET_MEAN, IMAGENET_STD))
    return ImageEncoder("dino", lambda pixels: model(pixel_values=pixels).pooler_output, pre, model.config.hidden_size,
                        torch.device(device))


# -------------------------------------------------------------------------------------------------------------------
# LAION aesthetic predictor
# -------------------------------------------------------------------------------------------------------------------


class AestheticPredictor(nn.Module):
    """The LAION MLP (state-dict keys ``layers.{0,2,4,6,7}.{weight,bias}``): a score, about 1..10, per embedding."""

    def __init__(self, dim: int = 768) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2), nn.Linear(128, 64),
            nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )

    @torch.no_grad()
    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``[N, dim]`` L2-normalised CLIP image embeddings -> ``[N]`` scores."""
        return self.layers(embeddings).squeeze(-1)


def load_aesthetic(path: Path) -> AestheticPredictor:
    """The LAION MLP from ``.safetensors`` or a plain state-dict ``.pth`` (read weights-only; NaN/inf refused)."""
    check_exists("aesthetic", path)
    src = MODEL_SOURCES["aesthetic"]
    try:
        state = read_weight_file(path, what="aesthetic MLP file", get=f"get it from {src.where}")
    except CheckpointError as e:
        raise ModelLoadError(f"--aesthetic: cannot read {path}: {e}") from None
    if "layers.0.weight" not in state:
        raise ModelLoadError(f"--aesthetic: {path} is not the LAION aesthetic MLP (no 'layers.0.weight'; keys: "
                             f"{sorted(state)[:6]}); pass {src.what}, from {src.where}")
    model = AestheticPredictor(int(state["layers.0.weight"].shape[1]))
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as e:
        raise ModelLoadError(f"--aesthetic: {path} does not fit the LAION MLP 768-1024-128-64-16-1: {e}") from None
    return model.eval()


# -------------------------------------------------------------------------------------------------------------------
# Face identity (YuNet + ArcFace through OpenCV)
# -------------------------------------------------------------------------------------------------------------------

ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)
"""Where the five landmarks (eye, eye, nose tip, mouth corner, mouth corner; image-left first) sit in the 112x112
crop ArcFace models are trained on (insightface's alignment template)."""
ARCFACE_SIZE = 112


def align_face(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 crop of ``image`` (uint8 RGB) whose five ``landmarks`` ([5, 2], x y) land on the template."""
    import cv2

    matrix, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), ARCFACE_TEMPLATE, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("face landmarks are degenerate (collinear); cannot align")
    return cv2.warpAffine(image, matrix, (ARCFACE_SIZE, ARCFACE_SIZE), borderValue=0)


class ArcFaceRecognizer:
    """An ArcFace ONNX model run by ``cv2.dnn``: ``embed_aligned(crop) -> unit vector``."""

    def __init__(self, path: Path) -> None:
        import cv2

        check_exists("face", path)
        try:
            self._net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as e:
            raise ModelLoadError(f"--face: OpenCV cannot load {path} as an ONNX network ({e}); pass an ArcFace "
                                 f"recogniser, e.g. {MODEL_SOURCES['face'].where}") from None

    def embed_aligned(self, crop: np.ndarray) -> np.ndarray:
        """A 112x112 uint8 RGB aligned face -> unit embedding (input: ``[1, 3, 112, 112]`` RGB,
        ``(x - 127.5) / 127.5``, as insightface feeds its ArcFace models)."""
        import cv2

        blob = cv2.dnn.blobFromImage(crop, 1.0 / 127.5, (ARCFACE_SIZE, ARCFACE_SIZE), (127.5, 127.5, 127.5),
                                     swapRB=False)
        self._net.setInput(blob)
        vector = self._net.forward().reshape(-1).astype(np.float32)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)


class FaceEmbedder:
    """``embed(image) -> unit vector`` of the largest face in an RGB image (YuNet, aligned, ArcFace), or ``None``
    when no face is found."""

    def __init__(self, recognizer: Path, detector: Path, score_threshold: float = 0.7) -> None:
        import cv2

        check_exists("face", recognizer)
        check_exists("face_detector", detector)
        self.recognizer = ArcFaceRecognizer(recognizer)
        try:
            self._detector = cv2.FaceDetectorYN.create(str(detector), "", (320, 320), score_threshold)
        except cv2.error as e:
            raise ModelLoadError(f"--face-detector: OpenCV cannot load {detector} as YuNet ({e}); get it from "
                                 f"{MODEL_SOURCES['face_detector'].where}") from None

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """Five landmarks ([5, 2]) of the largest detected face, or ``None``. YuNet's order (right eye, left eye,
        nose tip, right and left mouth corner, of the person) is the template's image-left-first order."""
        import cv2

        h, w = image.shape[:2]
        self._detector.setInputSize((w, h))
        _, faces = self._detector.detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if faces is None or len(faces) == 0:
            return None
        largest = max(faces, key=lambda f: f[2] * f[3])  # rows: x, y, w, h, 5 landmarks (x, y), score
        return largest[4:14].reshape(5, 2)

    def embed(self, image: np.ndarray) -> np.ndarray | None:
        points = self.landmarks(image)
        return None if points is None else self.recognizer.embed_aligned(align_face(image, points))
