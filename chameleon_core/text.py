"""Prompt features for the Wan DiT: umT5-XXL encoding and precomputed prompt-embedding files.

Two ways to get the ``[1, L, 4096]`` prompt features that :meth:`chameleon_core.model.WanModel.prepare_text` takes:

- :func:`encode_prompts` / :func:`load_prompt_encoder` run the released umT5-XXL encoder through transformers'
  ``UMT5EncoderModel`` and ``AutoTokenizer``, loaded from a *local* HuggingFace-format folder (the ``text_encoder/``
  and ``tokenizer/`` folders of a Wan diffusers repository such as ``Wan-AI/Wan2.2-TI2V-5B-Diffusers``, or a copy of
  ``google/umt5-xxl``). transformers is an optional extra (``pip install .[text]``); nothing here imports it until
  an encoder is loaded, and nothing is ever downloaded (``local_files_only``).
- :func:`load_prompt_embeddings` / :func:`save_prompt_embeddings` read and write the features as a safetensors file,
  so a machine without the encoder (or without the ~11 GB of RAM it takes in bf16) can use prompts encoded once
  elsewhere: ``python -m chameleon_core.tools.prompt_embeds --encoder DIR --prompt "..." --out embeds.safetensors``.

Text handling follows the Wan reference (Wan-Video/Wan2.1 ``wan/modules/t5.py`` ``T5EncoderModel.__call__``,
``wan/modules/tokenizers.py`` ``HuggingfaceTokenizer(clean='whitespace')``, used by ``wan/text2video.py``):

1. clean each prompt (ftfy when installed, HTML unescaped twice, whitespace collapsed and stripped);
2. tokenize with special tokens (umT5 appends ``</s>``), padded to and truncated at 512 tokens;
3. run the encoder with the attention mask;
4. cut each row to its true token count (the mask sum). The DiT zero-pads it back to ``text_len``, so a padded
   encoder row is never used: the features of padding tokens are not zeros and must not reach the model.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoints.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    check_regular_file,
)
from .config import WanConfig

logger = logging.getLogger(__name__)

TEXT_LEN: int = WanConfig.text_len
"""Tokens the prompt is padded / truncated to, as the reference (512 for every released Wan)."""

EMBEDDING_KEYS = ("context", "prompt_embeds")
"""Tensor names :func:`load_prompt_embeddings` picks without being told, in this order; ``context`` is what
:func:`save_prompt_embeddings` writes (the reference's name), ``prompt_embeds`` what diffusers pipelines call it."""

PROMPT_METADATA_KEY = "prompt"
"""Safetensors metadata entry holding the prompt text."""

INSTALL_HINT = 'pip install "transformers>=4.40" sentencepiece protobuf  (or, from the repository: pip install .[text])'
"""transformers 4.x and 5.x both work. sentencepiece and protobuf are needed only for a tokenizer folder without
``tokenizer.json`` (google/umt5-xxl ships ``spiece.model`` alone, which transformers converts on load)."""

ENCODER_FILES = "config.json and weights (model.safetensors, shards *.safetensors + index, or pytorch_model*.bin)"
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer.model")
"""Any one of these makes a folder a tokenizer folder (fast tokenizer, or the sentencepiece model of umT5)."""

WAN_NATIVE_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
"""The encoder file of the original Wan release: Wan's own T5 module names, not loadable by transformers."""

ENCODER_DTYPES = (torch.bfloat16, torch.float32, torch.float16)


class TextEncoderUnavailable(ImportError):
    """transformers (the optional ``text`` extra) is not installed or cannot be imported."""


# --- precomputed prompt embeddings ----------------------------------------------------------------------------------


def save_prompt_embeddings(path: str | Path, tensor: torch.Tensor, prompt: str) -> Path:
    """Write prompt features ``[L, D]`` or ``[1, L, D]`` to a safetensors file as ``context`` ``[1, L, D]``.

    The prompt text is stored in the file's metadata (``prompt``), so the file says what it encodes. The dtype is
    kept (bf16 from the encoder halves the file). Missing parent folders are created. Returns the path written.
    """
    from safetensors.torch import save_file

    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be the prompt text (str), got {type(prompt).__name__}; pass the string encoded")
    context = _as_context(tensor, what="prompt features to save")
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {PROMPT_METADATA_KEY: prompt, "tokens": str(context.shape[1]), "dim": str(context.shape[2])}
    save_file({EMBEDDING_KEYS[0]: context.detach().to("cpu").contiguous()}, str(path), metadata=metadata)
    logger.info("saved prompt features %s (%s) to %s", tuple(context.shape), context.dtype, path)
    return path


def load_prompt_embeddings(path: str | Path, *, key: str | None = None, text_dim: int | None = None) -> torch.Tensor:
    """Read prompt features from a safetensors file -> ``[1, L, D]`` (the stored dtype, on the CPU).

    The file holds one tensor, or several of which ``key`` names one; without ``key`` a tensor called ``context`` or
    ``prompt_embeds`` is taken. The tensor is ``[L, D]`` or ``[1, L, D]`` floating point. ``text_dim``, when
    given (the model's ``config.text_dim``), is checked against ``D``.
    """
    from safetensors import SafetensorError, safe_open

    path = _embeddings_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            name = _pick_embedding_name(path, names, key)
            tensor = f.get_tensor(name)
            prompt = (f.metadata() or {}).get(PROMPT_METADATA_KEY)
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"cannot read the prompt embeddings file {path} as safetensors ({type(e).__name__}: {e}); the file is "
            "damaged or not safetensors: pass a prompt embeddings file written by "
            "`python -m chameleon_core.tools.prompt_embeds` (or save_prompt_embeddings)"
        ) from e
    try:
        context = _as_context(tensor, what=f"tensor {name!r} in {path}")
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    if not bool(torch.isfinite(context).all()):
        raise CheckpointError(
            f"prompt embeddings file {path}: tensor {name!r} holds NaN/inf values; the file is damaged or was written "
            "from an encoder that overflowed (fp16): encode the prompt again in bf16 or fp32 "
            "(python -m chameleon_core.tools.prompt_embeds)"
        )
    if text_dim is not None and context.shape[-1] != text_dim:
        raise CheckpointError(
            f"tensor {name!r} in {path} has {context.shape[-1]} features per token, but the model takes "
            f"text_dim={text_dim}; encode the prompt with the text encoder that matches the model (umT5-XXL: 4096)"
        )
    logger.info("loaded prompt features %s from %s%s", tuple(context.shape), path, f" ({prompt!r})" if prompt else "")
    return context


def prompt_of(path: str | Path) -> str | None:
    """The prompt text stored in a prompt embeddings file's metadata, or None if it has none."""
    from safetensors import safe_open

    with safe_open(str(_embeddings_file(path)), framework="pt") as f:
        return (f.metadata() or {}).get(PROMPT_METADATA_KEY)


def _embeddings_file(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists() or path.is_dir():
        where = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise CheckpointNotFoundError(
            f"prompt embeddings file {str(path)!r} {where} (absolute: {path.resolve()}); pass a .safetensors file "
            "written by `python -m chameleon_core.tools.prompt_embeds --encoder DIR --prompt ... --out FILE`"
        )
    return check_regular_file(path, "prompt embeddings file")


def _pick_embedding_name(path: Path, names: list[str], key: str | None) -> str:
    if key is not None:
        if key not in names:
            raise CheckpointError(f"{path} has no tensor named {key!r}; it holds {sorted(names)}; pass one of those as key")
        return key
    if not names:
        raise CheckpointError(f"{path} holds no tensors; write the prompt features with save_prompt_embeddings")
    if len(names) == 1:
        return names[0]
    for name in EMBEDDING_KEYS:
        if name in names:
            return name
    raise CheckpointError(
        f"{path} holds {len(names)} tensors {sorted(names)} and none is called {' or '.join(EMBEDDING_KEYS)}; "
        "pass key=<name> to choose the prompt features"
    )


def _as_context(tensor: Any, *, what: str) -> torch.Tensor:
    """``[L, D]`` or ``[1, L, D]`` floating-point -> ``[1, L, D]``, with errors that show the shape received."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor [L, D] or [1, L, D], got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise ValueError(
            f"{what} has dtype {tensor.dtype}, but prompt features are floating point [L, D]; token ids or masks "
            "are not features -- run them through the text encoder first (chameleon_core.text.encode_prompts)"
        )
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    elif tensor.ndim != 3 or tensor.shape[0] != 1:
        raise ValueError(
            f"{what} must be [L, D] or [1, L, D] (one prompt), got shape {tuple(tensor.shape)}; "
            "store one prompt per file"
        )
    if tensor.shape[1] == 0 or tensor.shape[2] == 0:
        raise ValueError(f"{what} is empty, got shape {tuple(tensor.shape)}; an encoded prompt has at least one token")
    return tensor


# --- umT5-XXL through transformers ----------------------------------------------------------------------------------


def clean_prompt(text: str) -> str:
    """The reference's ``clean='whitespace'``: ftfy (when installed), HTML unescaped twice, whitespace collapsed."""
    try:
        import ftfy
    except ImportError:  # diffusers' Wan pipeline does the same: ftfy only fixes mojibake and curly quotes
        ftfy = None
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class PromptEncoder:
    """A loaded umT5 tokenizer and encoder; call it with prompts to get ``[1, L_i, D]`` features per prompt.

    Load it once with :func:`load_prompt_encoder` and keep it to encode several prompts (a prompt switch); use
    :func:`encode_prompts` for a one-off.
    """

    tokenizer: Any
    """A transformers tokenizer (right padding)."""
    model: torch.nn.Module
    """A transformers ``UMT5EncoderModel`` in eval mode."""
    max_length: int = TEXT_LEN
    """Prompts are padded and truncated to this many tokens, special tokens included."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def dim(self) -> int:
        """Features per token (``d_model``; 4096 for umT5-XXL)."""
        return int(self.model.config.d_model)

    def __call__(self, prompts: Sequence[str] | str) -> list[torch.Tensor]:
        """prompts: N strings -> N tensors ``[1, L_i, D]`` (model dtype and device), L_i = the prompt's tokens."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(
                f"prompts must be a non-empty list of strings, got {[type(p).__name__ for p in prompts]!r}; "
                'pass e.g. ["a woman in a red dress walks"]'
            )
        texts = [clean_prompt(p) for p in prompts]
        batch = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids = batch["input_ids"].to(self.device)  # [N, max_length]
        mask = batch["attention_mask"].to(self.device)  # [N, max_length], 1 = real token (right padding)
        lengths = mask.gt(0).sum(dim=1).tolist()
        vocab = int(self.model.config.vocab_size)
        if int(ids.max()) >= vocab:
            raise ValueError(
                f"the tokenizer produced token id {int(ids.max())}, but the encoder's vocabulary has {vocab} entries; "
                "the tokenizer files do not belong to this encoder -- use the tokenizer released with it"
            )
        self._warn_truncated(texts, lengths)
        with torch.inference_mode():
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [N, max_length, D]
        # Clone each kept slice so the padded batch can be freed.
        return [hidden[i : i + 1, :n].clone() for i, n in enumerate(lengths)]  # [1, L_i, D] each

    def _warn_truncated(self, texts: list[str], lengths: list[int]) -> None:
        for text, n in zip(texts, lengths):
            if n < self.max_length:
                continue
            full = len(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])
            if full > self.max_length:
                logger.warning(
                    "prompt has %d tokens; kept the first %d (the model's limit), as the reference does: %.60r...",
                    full,
                    self.max_length,
                    text,
                )


def load_prompt_encoder(
    encoder_dir: str | Path,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    tokenizer_dir: str | Path | None = None,
    max_length: int = TEXT_LEN,
) -> PromptEncoder:
    """Load umT5 from a local HuggingFace-format folder -> :class:`PromptEncoder`.

    ``encoder_dir`` is a folder with ``config.json`` and weights, or a diffusers pipeline folder holding
    ``text_encoder/``. The tokenizer is taken from ``tokenizer_dir`` when given, else from the first of
    ``encoder_dir``, ``encoder_dir/tokenizer``, and a ``tokenizer/`` beside the encoder folder that has tokenizer
    files. ``device`` defaults to CUDA when available; ``dtype`` defaults to bf16, as the reference (fp32 would need
    ~23 GB for umT5-XXL; fp16 overflows in T5 feed-forwards).
    """
    transformers = _import_transformers()
    model_dir, tok_dir = resolve_encoder_dirs(encoder_dir, tokenizer_dir)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if dtype is None else dtype
    if dtype not in ENCODER_DTYPES:
        raise ValueError(f"dtype must be one of {ENCODER_DTYPES}, got {dtype}; use torch.bfloat16 (the reference's)")
    if dtype == torch.float16:
        logger.warning("umT5 in float16 can overflow to inf in its feed-forward layers; bfloat16 is the reference's")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1 token, got {max_length}; the reference uses {TEXT_LEN}")

    for weights in [model_dir / "config.json", *model_dir.glob("*.safetensors"), *model_dir.glob("pytorch_model*.bin")]:
        check_regular_file(weights, "umT5 encoder file")  # a FIFO would block transformers' reader forever
    try:
        config = transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"cannot read {model_dir / 'config.json'} ({type(e).__name__}: {e}); the file is damaged or not a "
            "transformers config: download the encoder folder again"
        ) from None
    if config.model_type != "umt5":
        raise CheckpointError(
            f"{model_dir / 'config.json'} describes a {config.model_type!r} model, but Wan's text encoder is 'umt5' "
            "(umT5-XXL); point --encoder at the text_encoder/ folder of a Wan diffusers repository or at "
            "google/umt5-xxl"
        )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    except ImportError as e:
        raise TextEncoderUnavailable(
            f"loading the tokenizer in {tok_dir} needs a package that is missing ({e}); install it with: "
            f"{INSTALL_HINT}, or use a tokenizer folder that has tokenizer.json (Wan diffusers repositories do)"
        ) from e
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(
            f"cannot load the tokenizer in {tok_dir} ({type(e).__name__}: {e}); its files are damaged or belong to "
            "another tokenizer: copy umT5's tokenizer files again (tokenizer.json or spiece.model)"
        ) from None
    if tokenizer.pad_token is None:
        raise CheckpointError(
            f"the tokenizer in {tok_dir} has no pad token, which padding to {max_length} tokens needs; "
            "use the tokenizer files released with umT5 (pad token <pad>)"
        )
    # The cut to the mask length keeps the first L rows, which holds only for right padding.
    tokenizer.padding_side = "right"

    logger.info("loading umT5 encoder from %s (%s, %s), tokenizer from %s", model_dir, dtype, device, tok_dir)
    try:
        model = transformers.UMT5EncoderModel.from_pretrained(
            str(model_dir), config=config, local_files_only=True, **_from_pretrained_kwargs(transformers, dtype)
        )
    except (ImportError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 -- transformers / safetensors / torch each raise their own types
        raise _encoder_error(model_dir, e) from None
    model = model.to(device).eval().requires_grad_(False)
    finite = torch.stack([torch.isfinite(torch.stack([p.amax(), p.amin()])).all() for p in model.parameters()])
    if not bool(finite.all()):  # one host sync
        bad = [n for (n, _), ok in zip(model.named_parameters(), finite.tolist()) if not ok]
        raise CheckpointError(
            f"the umT5 encoder in {model_dir} holds NaN/inf weights in {len(bad)} tensor(s), first {bad[:5]}; the "
            "weight files are damaged: download them again"
        )
    return PromptEncoder(tokenizer=tokenizer, model=model, max_length=max_length)


def encode_prompts(
    encoder_dir: str | Path,
    prompts: Sequence[str],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    tokenizer_dir: str | Path | None = None,
    max_length: int = TEXT_LEN,
) -> list[torch.Tensor]:
    """Encode prompts with umT5 from a local folder -> one ``[1, L_i, D]`` tensor per prompt, cut to its tokens.

    Loads the encoder (see :func:`load_prompt_encoder` for the folder layouts and defaults), encodes all prompts in
    one batch, and frees the encoder. Outputs are in ``dtype`` on ``device``.
    """
    encoder = load_prompt_encoder(
        encoder_dir, device=device, dtype=dtype, tokenizer_dir=tokenizer_dir, max_length=max_length
    )
    try:
        return encoder(prompts)
    finally:
        on_cuda = encoder.device.type == "cuda"
        del encoder
        if on_cuda:
            torch.cuda.empty_cache()


def resolve_encoder_dirs(encoder_dir: str | Path, tokenizer_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Find the encoder folder (``config.json`` + weights) and the tokenizer folder -> ``(model_dir, tokenizer_dir)``.

    Raises :class:`~.checkpoints.errors.CheckpointNotFoundError` (a FileNotFoundError) naming the folders searched
    and the files expected.
    """
    root = Path(encoder_dir).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise CheckpointNotFoundError(
            f"text encoder folder {str(root)!r} {what}; expected a local HuggingFace-format umT5-XXL folder with "
            f"{ENCODER_FILES} and tokenizer files ({' or '.join(TOKENIZER_FILES)}), e.g. the text_encoder/ and "
            "tokenizer/ folders of Wan-AI/Wan2.2-TI2V-5B-Diffusers, or google/umt5-xxl"
        )
    searched = _unique([root, root / "text_encoder"])
    model_dir = next((d for d in searched if _is_encoder_dir(d)), None)
    if model_dir is None:
        hint = ""
        native = [p for p in (root, *root.glob("*")) if p.name == WAN_NATIVE_T5]
        if native:
            hint = (
                f" {native[0].name} is the original Wan release's encoder, in Wan's own module names, which "
                "transformers cannot load;"
            )
        raise CheckpointNotFoundError(
            f"no umT5 encoder in {[str(d) for d in searched]}: expected {ENCODER_FILES}; found "
            f"{_listing(root)}.{hint} point --encoder at a HuggingFace-format folder (the text_encoder/ folder of "
            "Wan-AI/Wan2.2-TI2V-5B-Diffusers, or google/umt5-xxl)"
        )
    if tokenizer_dir is not None:
        searched = [Path(tokenizer_dir).expanduser()]
    else:
        searched = _unique([model_dir, root, root / "tokenizer", model_dir.parent / "tokenizer"])
    tok_dir = next((d for d in searched if _is_tokenizer_dir(d)), None)
    if tok_dir is None:
        raise CheckpointNotFoundError(
            f"no tokenizer files ({' or '.join(TOKENIZER_FILES)}) in {[str(d) for d in searched]}; copy the umT5 "
            "tokenizer (the tokenizer/ folder of a Wan diffusers repository, or google/umt5-xxl's tokenizer files) "
            "next to the encoder, or pass --tokenizer DIR"
        )
    return model_dir, tok_dir


def _encoder_error(model_dir: Path, e: Exception) -> CheckpointError:
    """A failure of transformers' loader as one error naming the folder and the fix. torch's text for a refused
    pickle suggests loading with weights_only=False, which would run code from the file: it is never passed on."""
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip() and "weights_only" not in ln), "")
    if isinstance(e, pickle.UnpicklingError):
        return CheckpointError(
            f"refusing to load the umT5 weights in {model_dir}: a pytorch_model*.bin there holds pickled Python "
            "objects, not only tensors, and unpickling them could run arbitrary code (read with "
            f"torch.load(weights_only=True), which rejected it: {first or 'no detail'}). Use the model.safetensors "
            "release of the encoder (the text_encoder/ folder of Wan-AI/Wan2.2-TI2V-5B-Diffusers, or google/umt5-xxl)"
        )
    return CheckpointError(
        f"cannot load the umT5 encoder weights in {model_dir} ({type(e).__name__}: {first or 'no detail'}); the "
        "weight files are damaged, cut short or not umT5 weights: download the folder again"
    )


def _is_encoder_dir(d: Path) -> bool:
    if not (d / "config.json").is_file():
        return False
    return any(d.glob("*.safetensors")) or any(d.glob("pytorch_model*.bin"))


def _is_tokenizer_dir(d: Path) -> bool:
    return d.is_dir() and any((d / name).is_file() for name in TOKENIZER_FILES)


def _listing(d: Path, limit: int = 12) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in d.iterdir())
    if not names:
        return "an empty folder"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _unique(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if all(p.resolve() != q.resolve() for q in out):
            out.append(p)
    return out


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise TextEncoderUnavailable(
            f"encoding prompts with umT5-XXL needs the optional 'transformers' package, which cannot be imported "
            f"({e}); install it with: {INSTALL_HINT}. Or precompute prompt embeddings on a machine that has it "
            "(python -m chameleon_core.tools.prompt_embeds --encoder DIR --prompt ... --out FILE) and load them with "
            "load_prompt_embeddings"
        ) from e
    return transformers


def _from_pretrained_kwargs(transformers: Any, dtype: torch.dtype) -> dict[str, Any]:
    """``from_pretrained`` arguments for the installed transformers: the dtype, and low-memory loading.

    transformers >= 4.56 calls the dtype ``dtype`` (``torch_dtype`` before). From 4.51 on, weights always load onto
    the meta device first (``low_cpu_mem_usage`` is ignored); before, ``low_cpu_mem_usage=True`` needs accelerate,
    and without it host RAM holds a random-initialised copy of the model as well as the checkpoint.
    """
    from packaging.version import Version

    version = Version(transformers.__version__)
    kwargs: dict[str, Any] = {("dtype" if version >= Version("4.56") else "torch_dtype"): dtype}
    if version < Version("4.51"):
        if importlib.util.find_spec("accelerate") is not None:
            kwargs["low_cpu_mem_usage"] = True
        else:
            logger.warning(
                "transformers %s without accelerate loads umT5 with a second copy of its weights in host RAM; "
                "pip install accelerate (or transformers>=4.51) to halve peak memory",
                version,
            )
    return kwargs
