"""BatchNorm folding: an eval-mode BatchNorm that directly follows a sparse conv becomes the conv's weights.

Why: in inference a BatchNorm is a per-channel affine map, ``y = (x - mean) * g + beta`` with
``g = gamma / sqrt(var + eps)``; applied to a conv output it equals the conv with ``W[i][:, c] * g[c]``
(depthwise: ``W[i][c] * g[c]``) and bias ``(b - mean) * g + beta``. Folding removes one full read/write
of every feature map per conv from the exported graph.

Which BatchNorm follows which conv is found by running the model once on an example and matching the
BatchNorm's input tensor with a conv's output tensor (object identity), so any network built from the
engine's modules folds, whatever its block structure. Folding is only valid if nothing else reads the
conv's raw output; :func:`fold_batchnorm` therefore checks the folded copy against the original on the
example and refuses to return a model that differs.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..sparse import BatchNorm, Conv3d, SparseTensor

__all__ = ["FoldError", "find_conv_bn_pairs", "fold_batchnorm", "fold_into_conv", "FoldedBatchNorm"]


class FoldError(RuntimeError):
    """Folding would change the model's output (message gives the difference)."""


class FoldedBatchNorm(nn.Module):
    """What a folded BatchNorm becomes: a pass-through that remembers where its parameters went."""

    def __init__(self, into: str) -> None:
        super().__init__()
        self.into = into

    def extra_repr(self) -> str:
        return f"folded into {self.into!r}"

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x


def find_conv_bn_pairs(model: nn.Module, example: SparseTensor,
                       run=None) -> list[tuple[str, str]]:
    """``(conv name, batchnorm name)`` for every BatchNorm whose input is exactly a conv's output.

    A conv reused on several inputs, or a BatchNorm fed by different convs in one pass, is left alone.
    """
    names = {m: n for n, m in model.named_modules()}
    produced: dict[int, tuple[Tensor, str]] = {}   # id(conv output feats) -> (feats kept alive, conv name)
    conv_calls: dict[str, int] = {}
    bn_sources: dict[str, set[str | None]] = {}

    def conv_hook(module: nn.Module, args: tuple, out: SparseTensor) -> None:
        name = names[module]
        conv_calls[name] = conv_calls.get(name, 0) + 1
        produced[id(out.feats)] = (out.feats, name)

    def bn_hook(module: nn.Module, args: tuple) -> None:
        feats = args[0].feats
        hit = produced.get(id(feats))
        src = hit[1] if hit is not None and hit[0] is feats else None
        bn_sources.setdefault(names[module], set()).add(src)

    handles = []
    for m in model.modules():
        if isinstance(m, Conv3d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, BatchNorm):
            handles.append(m.register_forward_pre_hook(bn_hook))
    try:
        with torch.no_grad():
            run(model, example) if run is not None else model(example)
    finally:
        for h in handles:
            h.remove()
    pairs = []
    used: set[str] = set()
    for bn, sources in bn_sources.items():
        if len(sources) != 1:
            continue
        conv = next(iter(sources))
        if conv is None or conv in used or conv_calls.get(conv) != 1:
            continue
        used.add(conv)
        pairs.append((conv, bn))
    return pairs


@torch.no_grad()
def fold_into_conv(conv: Conv3d, bn: nn.BatchNorm1d) -> None:
    """Fold ``bn`` (eval semantics: running statistics) into ``conv``'s kernel and bias, in place."""
    if bn.running_mean is None or bn.running_var is None:
        raise FoldError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    kernel = conv.kernel.double()
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    # [K, Cin, Cout] * g over Cout; depthwise [K, C] * g over C: the last dim is the output channel either way
    conv.kernel.copy_((kernel * scale).to(conv.kernel.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(shift.to(conv.kernel.dtype))
    else:
        conv.bias.copy_(shift.to(conv.bias.dtype))


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    parent._modules[child] = module


def fold_batchnorm(model: nn.Module, example: SparseTensor, *, run=None, check: bool = True, inplace: bool = False,
                   rtol: float = 1e-4, atol: float = 1e-4) -> tuple[nn.Module, list[tuple[str, str]]]:
    """``model`` with every conv -> BatchNorm pair folded (a copy unless ``inplace``), in eval mode; and the pairs.

    ``run(model, x)`` (default ``model(x)``) must return a tensor; with ``check`` the folded model is run on
    ``example`` and must match the unfolded one within ``rtol``/``atol`` (``atol`` relative to the output's
    scale), else :class:`FoldError`. ``inplace`` saves a copy of the weights (large models at export).
    """
    call = run or (lambda m, x: m(x))
    model.eval()
    ref = None
    if check:
        with torch.no_grad():
            ref = call(model, _fresh(example))
    folded = model if inplace else copy.deepcopy(model)
    pairs = find_conv_bn_pairs(folded, _fresh(example), run=call)
    for conv_name, bn_name in pairs:
        fold_into_conv(folded.get_submodule(conv_name), folded.get_submodule(bn_name))
        _set_submodule(folded, bn_name, FoldedBatchNorm(conv_name))
    if ref is not None:
        with torch.no_grad():
            got = call(folded, _fresh(example))
        scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
        err = (got - ref).abs().max().item() if ref.numel() else 0.0
        if not torch.allclose(got, ref, rtol=rtol, atol=atol * scale):
            raise FoldError(f"folding {len(pairs)} BatchNorms changed the output by up to {err:.3g} "
                            f"(tolerance {atol * scale:.3g}): a folded conv's raw output must be read elsewhere")
    return folded, pairs


def _fresh(x: SparseTensor) -> SparseTensor:
    """The same input with an empty cache (each run builds its own maps)."""
    return SparseTensor(x.feats, x.coords, x.stride)
