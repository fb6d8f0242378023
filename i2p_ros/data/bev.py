"""Bird's-eye-view images of labeled scans, coloured by the SemanticKITTI ``color_map``.

The image is rasterised in numpy (each pixel shows the highest point that falls in it), so even a full
scan renders in milliseconds and the same pixels can be checked in tests; matplotlib (Agg backend, no
display needed) only adds axes, titles and a legend of the classes present when saving a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .labels import LabelConfig, load_label_config

__all__ = ["bev_image", "bev_pixel", "save_bev"]


def bev_pixel(x: np.ndarray, y: np.ndarray, extent: float, resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of sensor-frame (x, y): x forward points up the image, y left points left."""
    row = np.floor((extent - np.asarray(x)) / resolution).astype(np.int64)
    col = np.floor((extent - np.asarray(y)) / resolution).astype(np.int64)
    return row, col


def bev_image(points: np.ndarray, raw_labels: np.ndarray, label_config: LabelConfig | None = None, *,
              extent: float = 50.0, resolution: float = 0.1,
              background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB top-down view of ``points`` (x, y, z, ...) within +-``extent`` metres.

    Each pixel takes the colour of its highest point, so roofs and tree crowns hide the ground as from
    above. Points outside the square or with non-finite coordinates are skipped.
    """
    cfg = label_config or load_label_config()
    pts = np.asarray(points)
    labels = np.asarray(raw_labels)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"bev_image: points must be [N, >=3], got {pts.shape}")
    if labels.shape != (pts.shape[0],):
        raise ValueError(f"bev_image: {labels.shape} labels for {pts.shape[0]} points")
    size = int(np.ceil(2 * extent / resolution))
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = background
    finite = np.isfinite(pts[:, :3]).all(1)
    far = 2 * extent + 1.0   # stand-in coordinate for non-finite points: outside the image
    row, col = bev_pixel(np.where(finite, pts[:, 0], far), np.where(finite, pts[:, 1], far), extent, resolution)
    ok = finite & (row >= 0) & (row < size) & (col >= 0) & (col < size)
    if not ok.any():
        return img
    pix = row[ok] * size + col[ok]
    z = pts[ok, 2]
    order = np.lexsort((z, pix))                        # by pixel, then height
    pix_sorted = pix[order]
    last = np.r_[pix_sorted[1:] != pix_sorted[:-1], True]  # highest point of each pixel
    chosen = order[last]
    img.reshape(-1, 3)[pix[chosen]] = cfg.colors_rgb(labels[ok][chosen])
    return img


def save_bev(path: str | os.PathLike, points: np.ndarray, raw_labels: np.ndarray | Sequence[np.ndarray],
             label_config: LabelConfig | None = None, *, titles: Sequence[str] | None = None,
             extent: float = 50.0, resolution: float = 0.1, dpi: int = 100) -> Path:
    """Save a PNG with one BEV panel per label array (e.g. ground truth and prediction side by side)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cfg = label_config or load_label_config()
    label_sets = [raw_labels] if isinstance(raw_labels, np.ndarray) else list(raw_labels)
    if titles is not None and len(titles) != len(label_sets):
        raise ValueError(f"save_bev: {len(titles)} titles for {len(label_sets)} label arrays")
    present = np.unique(np.concatenate([np.asarray(lbl).reshape(-1) for lbl in label_sets]))
    fig, axes = plt.subplots(1, len(label_sets), figsize=(7 * len(label_sets) + 2.5, 7), squeeze=False)
    for k, (ax, lbl) in enumerate(zip(axes[0], label_sets)):
        ax.imshow(bev_image(points, lbl, cfg, extent=extent, resolution=resolution),
                  extent=(extent, -extent, -extent, extent), interpolation="nearest")
        ax.set_xlabel("y [m] (left)")
        ax.set_ylabel("x [m] (forward)")
        if titles is not None:
            ax.set_title(titles[k])
    handles = [Patch(color=cfg.colors_rgb(np.array([r]))[0] / 255.0, label=f"{int(r)} {cfg.names.get(int(r), '?')}")
               for r in present]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.3 / fig.get_figwidth(), 1))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
