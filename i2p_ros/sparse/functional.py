"""Sparse convolution over a kernel map: the two execution strategies.

* ``scatter`` (training): per offset, gather the active input rows and ``mm`` them with ``W[i]``; the products
  are accumulated into their output rows. On CPU every torch scatter-add (``index_add_`` included) costs more
  than the ``mm`` itself, so the accumulation is done block-wise: a block's products are written side by side
  into a small workspace and summed per output row with one ``embedding_bag`` (see plan.py). A custom
  autograd Function keeps only the inputs and the map for backward, so memory stays O(N*C) (never
  ``[N, K, C]``). The identity offset of a submanifold map is one fused ``addmm`` per block. Depthwise convs
  multiply a whole block at once (``x[in] * W[offset of the pair]``) rather than one tiny op per offset, and
  sum their weight gradients per offset with one ``embedding_bag`` per block: with 5³ kernels (125 offsets)
  per-offset ops made op dispatch, not arithmetic, the cost.
* ``gather`` (export): an output-stationary neighbour table ``[N_out, K]`` (missing -> index of an appended zero
  row); the computation is only Gather, MatMul (Mul for depthwise) and Add, so it traces to ONNX with dynamic N.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .kmap import KernelMap
from .plan import ReducePlan, block_pairs_for

__all__ = ["scatter_conv", "gather_conv", "set_strategy", "get_strategy", "strategy", "STRATEGIES"]

STRATEGIES = ("scatter", "gather")
_default = {"strategy": "scatter"}  # process-wide default (set_strategy)
_local = threading.local()  # per-thread override (the strategy() context manager)


def _check_name(name: str) -> str:
    if name not in STRATEGIES:
        raise ValueError(f"unknown sparse conv strategy {name!r}; choose one of {STRATEGIES}")
    return name


def get_strategy() -> str:
    """The execution strategy convs without their own ``strategy`` use: this thread's ``strategy()`` block,
    else the process-wide default (``"scatter"`` unless :func:`set_strategy` changed it)."""
    override = getattr(_local, "stack", None)
    return override[-1] if override else _default["strategy"]


def set_strategy(name: str) -> None:
    """Set the process-wide default execution strategy (``"scatter"`` or ``"gather"``)."""
    _default["strategy"] = _check_name(name)


@contextlib.contextmanager
def strategy(name: str) -> Iterator[None]:
    """Use ``name`` as the default strategy inside the block (this thread only; blocks nest)."""
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(_check_name(name))
    try:
        yield
    finally:
        stack.pop()


# --------------------------------------------------------------------------------------------- scatter
def _weights(weight: Tensor, transpose_w: bool) -> list[Tensor]:
    """Per-offset weight views (``W[i].T`` when ``transpose_w``), split once per call."""
    if transpose_w and weight.dim() == 3:
        weight = weight.transpose(1, 2)
    return list(weight.unbind(0))


def _products(g: Tensor, plan: ReducePlan, k: int, y0: int, ws: list[Tensor], weight: Tensor,
              ybuf: Tensor) -> Tensor:
    """Products of block ``k``'s gathered rows ``g`` with their offsets' weights, into ``ybuf[:n]``.

    Regular conv: one ``mm`` per offset run. Depthwise: the whole block at once, ``g * W[offset of each pair]``
    (a gather of the small weight table), so the op count does not grow with the kernel volume (125 for 5³).
    """
    n = g.shape[0]
    y = ybuf[:n]
    if weight.dim() == 2:
        torch.index_select(weight, 0, plan.offset_idx[y0:y0 + n], out=y)
        return y.mul_(g)
    sizes = plan.sizes[k]
    for (i, _), gi, yi in zip(plan.slots[k], torch.split(g, sizes), torch.split(y, sizes)):
        torch.mm(gi, ws[i], out=yi)
    return y


def _plan_apply(x: Tensor, kmap: KernelMap, weight: Tensor, n_out: int, c_out: int,
                transpose_w: bool, centre_src: Tensor | None) -> Tensor:
    """``out[o] = sum over pairs (i -> o, offset k) of x[i] @ W[k]`` block by block (see plan.py).

    ``centre_src`` (identity offset): its rows ``@ W[centre]`` are added to each block with one fused addmm.
    """
    depthwise = weight.dim() == 2
    if kmap.unique_out and centre_src is None:
        return _direct_apply(x, kmap, weight, n_out, c_out, transpose_w)
    plan = kmap.plan(block_pairs_for(x.shape[1] + c_out, depthwise))
    ws = [] if depthwise else _weights(weight, transpose_w)
    out = torch.empty((n_out, c_out), dtype=x.dtype, device=x.device)
    m = max(plan.max_block_pairs, 1)
    gbuf = torch.empty((m, x.shape[1]), dtype=x.dtype, device=x.device)
    ybuf = torch.empty((m, c_out), dtype=x.dtype, device=x.device)
    w_c = None
    if centre_src is not None:
        w_c = weight[kmap.identity] if depthwise else ws[kmap.identity]
    for k in range(plan.num_blocks):
        y0, y1 = plan.y_bounds[k], plan.y_bounds[k + 1]
        r0, r1 = plan.row_bounds[k], plan.row_bounds[k + 1]
        n = y1 - y0
        if n:
            g = torch.index_select(x, 0, plan.gather_idx[y0:y1], out=gbuf[:n])
            _products(g, plan, k, y0, ws, weight, ybuf)
        blk = F.embedding_bag(plan.bag_idx[y0:y1], ybuf[:max(n, 1)], plan.bag_offsets[r0:r1], mode="sum")
        if w_c is not None:
            if depthwise:
                blk.addcmul_(centre_src[r0:r1], w_c)
            else:
                blk.addmm_(centre_src[r0:r1], w_c)
        out[r0:r1] = blk
    return out


def _direct_apply(x: Tensor, kmap: KernelMap, weight: Tensor, n_out: int, c_out: int,
                  transpose_w: bool) -> Tensor:
    """A map whose every output row has exactly one pair (the decoder's 2x2x2 up-conv): per offset, gather the
    inputs, multiply, and write the rows in place. No plan and no reduction are needed."""
    depthwise = weight.dim() == 2
    ws = [] if depthwise else _weights(weight, transpose_w)
    out = torch.empty((n_out, c_out), dtype=x.dtype, device=x.device)
    for i, (a, b) in enumerate(zip(kmap.in_idx, kmap.out_idx)):
        if a is None or a.numel() == 0:
            continue
        g = x.index_select(0, a)
        out.index_copy_(0, b, g.mul_(weight[i]) if depthwise else torch.mm(g, ws[i]))
    return out


def _scatter_forward(feats: Tensor, kmap: KernelMap, weight: Tensor) -> Tensor:
    centre = feats if kmap.identity is not None else None
    return _plan_apply(feats, kmap, weight, kmap.n_out, weight.shape[-1], False, centre)


def _scatter_backward(grad_out: Tensor, feats: Tensor, kmap: KernelMap, weight: Tensor,
                      need_x: bool, need_w: bool) -> tuple[Tensor | None, Tensor | None]:
    """Input gradient = the transposed map applied with transposed weights; weight gradient accumulated from the
    same gathered rows (blocks of the transposed plan), so every pair's rows are gathered once."""
    depthwise = weight.dim() == 2
    kt = kmap.transposed()
    centre = grad_out if kmap.identity is not None else None
    grad_x = None
    if need_x and not need_w:
        return _plan_apply(grad_out, kt, weight, kmap.n_in, feats.shape[1], True, centre), None
    grad_w = torch.zeros_like(weight)
    if kmap.identity is not None:
        if depthwise:
            grad_w[kmap.identity] = (feats * grad_out).sum(0)
        else:
            torch.mm(feats.t(), grad_out, out=grad_w[kmap.identity])
    plan = kt.plan(block_pairs_for(feats.shape[1] + grad_out.shape[1], depthwise))
    m = max(plan.max_block_pairs, 1)
    dev, dt = feats.device, feats.dtype
    c_in, c_out = feats.shape[1], grad_out.shape[1]
    gbuf = torch.empty((m, c_out), dtype=dt, device=dev)
    xbuf = torch.empty((m, c_in), dtype=dt, device=dev)
    ybuf = torch.empty((m, c_in), dtype=dt, device=dev) if need_x else None
    w_c = None
    if need_x:
        grad_x = torch.empty((kmap.n_in, c_in), dtype=dt, device=dev)
        if centre is not None:
            w_c = weight[kmap.identity] if depthwise else weight[kmap.identity].t()
    ws = [] if depthwise else _weights(weight, True)
    gws = [] if depthwise else list(grad_w.unbind(0))
    if depthwise:  # per-offset sums of whole blocks: one embedding_bag over the slots, accumulated here
        acc = torch.zeros((plan.slot_offsets.numel(), c_in), dtype=dt, device=dev)
        ar = torch.arange(m, device=dev)
    for k in range(plan.num_blocks):
        y0, y1 = plan.y_bounds[k], plan.y_bounds[k + 1]
        r0, r1 = plan.row_bounds[k], plan.row_bounds[k + 1]
        n = y1 - y0
        if n:
            g = torch.index_select(grad_out, 0, plan.gather_idx[y0:y1], out=gbuf[:n])
            x = torch.index_select(feats, 0, plan.out_rows[y0:y1], out=xbuf[:n])
            if need_x:
                _products(g, plan, k, y0, ws, weight, ybuf)
            if depthwise:
                acc += F.embedding_bag(ar[:n], x.mul_(g), plan.slot_starts[k], mode="sum")
            else:
                sizes = plan.sizes[k]
                for (i, _), xi, gi in zip(plan.slots[k], torch.split(x, sizes), torch.split(g, sizes)):
                    gws[i].addmm_(xi.t(), gi)
        if need_x:
            blk = F.embedding_bag(plan.bag_idx[y0:y1], ybuf[:max(n, 1)], plan.bag_offsets[r0:r1], mode="sum")
            if w_c is not None:
                if depthwise:
                    blk.addcmul_(centre[r0:r1], w_c)
                else:
                    blk.addmm_(centre[r0:r1], w_c)
            grad_x[r0:r1] = blk
    if depthwise and plan.slot_offsets.numel():
        grad_w.index_add_(0, plan.slot_offsets, acc)
    return grad_x, grad_w


class _ScatterConv(torch.autograd.Function):
    """Autograd wrapper: saves feats, weight and the map (no per-offset buffers)."""

    @staticmethod
    def forward(ctx, feats: Tensor, weight: Tensor, bias: Tensor | None, kmap: KernelMap) -> Tensor:
        ctx.kmap = kmap
        ctx.has_bias = bias is not None
        ctx.save_for_backward(feats, weight)
        out = _scatter_forward(feats, kmap, weight)
        if bias is not None:
            out.add_(bias)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        feats, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        gx, gw = _scatter_backward(grad_out, feats, ctx.kmap, weight,
                                   ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        gb = grad_out.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


def scatter_conv(feats: Tensor, kmap: KernelMap, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Sparse conv with the scatter strategy. ``weight`` is ``[K, Cin, Cout]`` or depthwise ``[K, C]``."""
    _check(feats, kmap, weight)
    return _ScatterConv.apply(feats.contiguous(), weight.contiguous(), bias, kmap)


# --------------------------------------------------------------------------------------------- gather
def gather_conv(feats: Tensor, table: Tensor, weight: Tensor, bias: Tensor | None = None,
                identity: int | None = None) -> Tensor:
    """Sparse conv with the gather strategy over a neighbour table ``[N_out, K]`` (missing -> ``N_in``).

    ``identity`` (the centre offset of a submanifold map) uses ``feats`` directly instead of gathering it.
    Only Gather / MatMul (Mul for depthwise) / Add / Concat, so it exports to ONNX with dynamic N.
    """
    if table.dim() != 2 or table.shape[1] != weight.shape[0]:
        raise ValueError(f"gather_conv: table must be [N_out, K={weight.shape[0]}], got {tuple(table.shape)}")
    depthwise = weight.dim() == 2
    padded = torch.cat([feats, feats.new_zeros((1, feats.shape[1]))], dim=0)
    out = None
    for i in range(weight.shape[0]):
        x = feats if i == identity else padded.index_select(0, table[:, i])
        term = x * weight[i] if depthwise else torch.matmul(x, weight[i])
        out = term if out is None else out + term
    if bias is not None:
        out = out + bias
    return out


def _check(feats: Tensor, kmap: KernelMap, weight: Tensor) -> None:
    if feats.shape[0] != kmap.n_in:
        raise ValueError(f"sparse conv: feats has {feats.shape[0]} rows but the kernel map expects {kmap.n_in}")
    if weight.shape[0] != kmap.kernel_volume:
        raise ValueError(f"sparse conv: weight has {weight.shape[0]} offsets, kernel map has {kmap.kernel_volume}")
    if weight.dim() == 3 and weight.shape[1] != feats.shape[1]:
        raise ValueError(f"sparse conv: weight expects {weight.shape[1]} input channels, feats have {feats.shape[1]}")
    if weight.dim() == 2 and weight.shape[1] != feats.shape[1]:
        raise ValueError(f"depthwise sparse conv: weight has {weight.shape[1]} channels, feats have {feats.shape[1]}")
    if weight.dtype != feats.dtype:
        raise TypeError(f"sparse conv: weight dtype {weight.dtype} != feats dtype {feats.dtype}")
