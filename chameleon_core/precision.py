"""How the Wan DiT computes, decided in one place: the :class:`Precision` policy (compute dtype, the layers that run
in fp32, the fp8 matmul mode, and which layers of another implementation cast their own weights).

Follows the official Wan reference (``wan/modules/model.py``): the residual stream, timestep embedding, modulation,
norms and RoPE run in fp32 under its fp32 autocast regions; the linear layers run in the weight dtype. The model
(:class:`~chameleon_core.model.WanModel`) holds one policy and hands it to every block; the native-MODEL view
(:class:`~chameleon_core.module_view.ModuleView`, a ComfyUI MODEL's own modules) holds one built from ComfyUI's
compute dtype and cast rule; fp8 storage (:mod:`chameleon_core.quant`) sets the compute dtype and the matmul mode
here, not on each layer. ComfyUI decides casts the same way, with one ``operations=`` object per model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
FP8_MATMUL_MODES = ("auto", "scaled", "off")
"""How linears with fp8 weights run: ``scaled`` fp8 matmuls always, ``auto`` on CUDA devices with fp8 tensor cores
(compute capability 8.9+: Ada, Hopper, Blackwell) and upcast elsewhere, ``off`` always upcast (weight-only)."""
FP32_LAYERS = ("time_embedding", "time_projection")
"""The linear layers the reference evaluates in fp32 whatever the weight dtype (its fp32 autocast regions)."""


@dataclass(frozen=True)
class Precision:
    """The precision policy of one model: every cast the forward makes is decided by these fields."""

    compute: torch.dtype = torch.float32
    """Activations between layers and the KV cache; the input dtype of linears that hold fp8 weights or cast their
    own (an fp8 model's bf16, a ComfyUI MODEL's ``manual_cast_dtype``)."""
    fp32_layers: tuple[str, ...] = FP32_LAYERS
    """Linear layers (module names) evaluated in fp32 (:meth:`linear32`)."""
    fp8_matmul: str = "off"
    """One of :data:`FP8_MATMUL_MODES`."""
    layer_casts: Callable[[nn.Module], bool] | None = None
    """For another implementation's layers (:class:`CalledLayer`): whether a layer casts its weights to its input's
    dtype on this call (ComfyUI's cast layers; a partially loaded model's offloaded layers); None: none does. A
    layer that does not cast is fed its own (floating, non-fp8) weight dtype, as its owner's forward feeds it."""

    def __post_init__(self) -> None:
        if self.compute not in COMPUTE_DTYPES:
            raise ValueError(f"compute dtype must be one of {[str(d) for d in COMPUTE_DTYPES]}, got {self.compute}")
        if self.fp8_matmul not in FP8_MATMUL_MODES:
            raise ValueError(f"fp8 matmul must be one of {FP8_MATMUL_MODES}, got {self.fp8_matmul!r}")

    # -- which dtype ------------------------------------------------------------------------------------------------

    def activation_dtype(self, layer: nn.Module) -> torch.dtype:
        """The dtype the model hands a linear's input over in: the compute dtype for fp8 weights and called layers,
        the weight dtype otherwise (the reference's)."""
        if isinstance(layer, CalledLayer) or layer.weight.dtype in FP8_DTYPES:
            return self.compute
        return layer.weight.dtype

    def input_dtype(self, layer: CalledLayer, want: torch.dtype) -> torch.dtype:
        """The dtype a called layer is fed when ``want`` is asked for: ``want`` if it casts or holds quantised
        weights, else its weight's dtype."""
        w = getattr(layer.inner, "weight", None)
        if (isinstance(w, torch.Tensor) and w.is_floating_point() and w.dtype not in FP8_DTYPES
                and not (self.layer_casts is not None and self.layer_casts(layer.inner))):
            return w.dtype
        return want

    # -- the linears ------------------------------------------------------------------------------------------------

    def linear(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A linear layer in its weight dtype; fp8 weights (:mod:`chameleon_core.quant`) in the compute dtype, upcast
        and rescaled per call or as a scaled fp8 matmul (:attr:`fp8_matmul`); a called layer called."""
        if isinstance(layer, CalledLayer):
            return layer(x)
        w = layer.weight
        if w.dtype in FP8_DTYPES:
            if self._fp8_matmul(x):
                return fp8_linear(layer, x, self.compute)
            cd = self.compute
            w = w.to(cd) * layer.scale_weight.to(cd)
            bias = layer.bias.to(cd) if layer.bias is not None else None
            return F.linear(x.to(cd), w, bias)
        return layer(x.to(w.dtype))

    def linear32(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A linear layer evaluated in fp32 whatever the weight dtype; the fp32 weights of a bf16 model are upcast
        once (:func:`fp32_view`), not per call. A called layer gets an fp32 input where it casts (its weight dtype
        where it does not) and returns fp32."""
        with torch.autocast(x.device.type, enabled=False):  # fp32 under a trainer's autocast too
            if isinstance(layer, CalledLayer):
                return layer.inner(x.to(self.input_dtype(layer, torch.float32))).float()
            return F.linear(x.float(), fp32_view(layer.weight), fp32_view(layer.bias))

    def linear_of(self, name: str) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
        """:meth:`linear32` for the layers in :attr:`fp32_layers`, :meth:`linear` for the rest."""
        return self.linear32 if name in self.fp32_layers else self.linear

    def _fp8_matmul(self, x: torch.Tensor) -> bool:
        if self.fp8_matmul == "scaled":
            return True
        return self.fp8_matmul == "auto" and x.is_cuda and torch.cuda.get_device_capability(x.device) >= (8, 9)


class CalledLayer(nn.Module):
    """A layer owned by another implementation (its weights cast, quantised, patched or offloaded by that
    implementation), which the core only ever calls as a module, fed the dtype its :class:`Precision` decides
    (:meth:`Precision.input_dtype`). The core never reads its weights (:mod:`chameleon_core.module_view`)."""

    def __init__(self, inner: nn.Module, precision: Precision) -> None:
        super().__init__()
        self.inner = inner
        self.precision = precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(self.precision.input_dtype(self, self.precision.compute)))


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware: a CUDA GPU that supports bf16, or a CPU with AVX-512
    BF16 or AMX. Elsewhere PyTorch emulates bf16 products, far slower than fp32: on a 2-core AVX2 CPU (AMD EPYC) a
    1024^3 bf16 matmul took 2.6 s against 44 ms in fp32, where an AVX-512 BF16 CPU runs bf16 about 1.5x faster than
    fp32 (docs/experiments/world.md, item 11). Other device types: True (their own backends decide)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        cpu = torch.cpu
        return any(bool(getattr(cpu, name, lambda: False)())
                   for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return True


def fp32_view(p: torch.Tensor | None) -> torch.Tensor | None:
    """``p`` in fp32, upcast once and reused while ``p`` is unchanged (small precision-critical weights of a bf16
    model: time embedding, modulation tables, norm gains). An fp32 ``p`` is returned as is; under autograd with a
    trainable ``p`` the upcast is recomputed so the gradient reaches ``p``."""
    if p is None or p.dtype == torch.float32:
        return p
    if p.requires_grad and torch.is_grad_enabled():
        return p.float()
    if p.is_inference() or torch.is_inference_mode_enabled():
        # An inference tensor has no version counter, and a shadow made under inference_mode could not be saved by
        # autograd later: never cache (ComfyUI runs every node under inference_mode).
        return p.float()
    key = (p.data_ptr(), p._version, p.device)
    # Kept on the parameter itself, so it lives and dies with it (a global table keyed by id could hand a dead
    # parameter's copy to a new one at the same address).
    hit = getattr(p, "_fp32_shadow", None)
    if hit is not None and hit[0] == key:
        return hit[1]
    shadow = p.detach().float()
    p._fp32_shadow = (key, shadow)
    return shadow


def fp8_linear(layer: nn.Linear, x: torch.Tensor, compute: torch.dtype) -> torch.Tensor:
    """A scaled fp8 matmul: ``x`` quantised to e4m3 with one dynamic per-tensor scale (its amax / 448, kept on the
    device: no sync), the weight used as stored with its own ``scale_weight`` (a ComfyUI scaled-fp8 file's scale, not
    rounded a second time); fp32 accumulation, output and bias in the ``compute`` dtype."""
    lead, k = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, k).to(compute)
    fmax = torch.finfo(torch.float8_e4m3fn).max
    scale_x = (x2.abs().amax().float() / fmax).clamp(min=1e-12)
    xq = (x2.float() / scale_x).clamp(-fmax, fmax).to(torch.float8_e4m3fn)
    rows = xq.shape[0]
    if rows % 16:  # the fp8 GEMMs want every dimension a multiple of 16 (Wan's widths are; token counts may not be)
        xq = torch.cat([xq, xq.new_zeros(16 - rows % 16, k)])
    bias = layer.bias.to(compute) if layer.bias is not None else None
    out = torch._scaled_mm(xq, layer.weight.t(), scale_a=scale_x, scale_b=layer.scale_weight.float(), bias=bias,
                           out_dtype=compute)
    return out[:rows].reshape(*lead, -1)
