"""Bird's-eye view: pixels take the color_map colour of the highest point; the PNG is written."""

import matplotlib.image as mpimg
import numpy as np
import pytest

from i2p_ros.data.bev import bev_image, bev_pixel, save_bev
from i2p_ros.data.labels import load_label_config

CFG = load_label_config()


def test_pixels_show_the_highest_point_in_color_map_colours():
    pts = np.array([[10.05, 5.05, -1.7, 0.1],    # road
                    [10.02, 5.08, 0.3, 0.2],     # car above the road in the same 0.1 m cell
                    [-20.0, -30.0, -1.7, 0.1],   # sidewalk
                    [200.0, 0.0, 0.0, 0.0],      # outside the image
                    [np.nan, 0.0, 0.0, 0.0]], np.float32)
    raw = np.array([40, 10, 48, 70, 70], np.uint16)
    img = bev_image(pts, raw, CFG, extent=50.0, resolution=0.1)
    assert img.shape == (1000, 1000, 3)
    # hand-computed cells: row = floor((50 - x) / 0.1), col = floor((50 - y) / 0.1)
    assert img[399, 449].tolist() == [100, 150, 245]   # car (BGR 245,150,100) wins over the road below it
    assert img[700, 800].tolist() == [75, 0, 75]       # sidewalk (BGR 75,0,75)
    assert (img.reshape(-1, 3) != 255).any(1).sum() == 2   # everything else is background
    r, c = bev_pixel(np.array([10.05]), np.array([5.05]), 50.0, 0.1)
    assert (r[0], c[0]) == (399, 449)
    with pytest.raises(ValueError, match="labels for 5 points"):
        bev_image(pts, raw[:4], CFG)


def test_save_bev_writes_png_with_panels(tmp_path):
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(-40, 40, (2000, 3)), rng.uniform(0, 1, (2000, 1))], 1).astype(np.float32)
    gt = rng.choice([40, 48, 50, 70], 2000).astype(np.uint16)
    out = save_bev(tmp_path / "sub" / "bev.png", pts, [gt, gt[::-1].copy()], CFG, titles=["gt", "pred"], dpi=50)
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[1] > 1.8 * img.shape[0]   # two panels side by side + legend
    with pytest.raises(ValueError, match="2 titles for 1 label arrays"):
        save_bev(tmp_path / "x.png", pts, gt, CFG, titles=["a", "b"])
