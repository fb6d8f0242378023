"""Dataset, augmentation, majority-vote voxel labels, collate and the map back to every point."""

from collections import Counter

import numpy as np
import pytest
import torch

from i2p_ros.data.dataset import (
    AugmentConfig,
    SemanticKittiDataset,
    augment_points,
    collate,
    make_sample,
    random_transform,
    voxel_majority,
)
from i2p_ros.data.labels import IGNORE_INDEX, load_label_config
from i2p_ros.data.semantic_kitti import Scan, SemanticKittiFormatError, write_label_file, write_sequence
from i2p_ros.data.sim import main as sim_main

CFG = load_label_config()
RAW_CHOICES = np.array([0, 10, 40, 48, 50, 70, 72, 252, 99])


def _scan(rng, n, spread=3.0):
    pts = np.concatenate([rng.uniform(-spread, spread, (n, 3)), rng.uniform(0, 1, (n, 1))], 1).astype(np.float32)
    return pts, rng.choice(RAW_CHOICES, n).astype(np.uint16)


def test_voxel_majority_matches_brute_force():
    rng = np.random.default_rng(0)
    m, c = 50, 5
    inverse = torch.from_numpy(rng.integers(-1, m, 600))
    labels = torch.from_numpy(rng.choice([0, 1, 2, 3, 4, IGNORE_INDEX], 600, p=[.1, .2, .2, .1, .1, .3]))
    got = voxel_majority(inverse, labels, m, c)
    for v in range(m):
        votes = Counter(int(lbl) for i, lbl in zip(inverse.tolist(), labels.tolist()) if i == v and lbl != 255)
        if not votes:
            assert got[v] == IGNORE_INDEX
        else:
            best = max(votes.values())
            assert got[v] == min(k for k, n in votes.items() if n == best)   # ties -> smaller index


def test_sample_voxels_labels_and_inverse():
    rng = np.random.default_rng(1)
    pts, raw = _scan(rng, 3000)
    s = make_sample(pts, raw, label_config=CFG, voxel_size=0.5)
    assert s.num_points == 3000 and (s.inverse >= 0).all()
    # every point sits in the voxel floor(p / voxel_size) that the inverse map names
    np.testing.assert_array_equal(s.coords[s.inverse].numpy(), np.floor(pts[:, :3] / 0.5).astype(np.int32))
    # features are means of the voxel's points (check a few voxels by hand)
    for v in (0, 7, len(s.coords) - 1):
        members = pts[(s.inverse == v).numpy()]
        np.testing.assert_allclose(s.feats[v].numpy(), members.mean(0), rtol=1e-5, atol=1e-6)
    train = CFG.to_train(raw)
    np.testing.assert_array_equal(s.point_labels.numpy(), train)
    np.testing.assert_array_equal(s.raw_labels.numpy(), raw)
    # a voxel label is one of its points' labels, and the most frequent non-ignored one
    for v in range(0, len(s.coords), 17):
        lab = train[(s.inverse == v).numpy()]
        lab = lab[lab != 255]
        if len(lab) == 0:
            assert s.voxel_labels[v] == 255
        else:
            assert np.sum(lab == int(s.voxel_labels[v])) == np.bincount(lab).max()


def test_unlabeled_sample_and_bad_shapes():
    rng = np.random.default_rng(2)
    pts, raw = _scan(rng, 100)
    s = make_sample(pts, None, label_config=CFG)
    assert s.voxel_labels is None and s.point_labels is None
    with pytest.raises(ValueError, match=r"\(99,\) labels for 100 points"):
        make_sample(pts, raw[:99], label_config=CFG)
    with pytest.raises(ValueError, match=r"points must be \[N, 4\]"):
        make_sample(pts[:, :3], raw, label_config=CFG)


def test_random_transform_is_yaw_times_scale():
    rng = np.random.default_rng(3)
    cfg = AugmentConfig()
    angles = []
    for _ in range(200):
        m = random_transform(cfg, rng)
        s = np.cbrt(np.linalg.det(m))
        assert 0.95 <= s <= 1.05
        np.testing.assert_allclose(m.T @ m, s * s * np.eye(3), atol=1e-12)   # a scaled rotation
        np.testing.assert_allclose(m[2], [0, 0, s], atol=1e-12)               # about z only
        angles.append(np.arctan2(m[1, 0], m[0, 0]))
    assert np.ptp(angles) > 5.5                                            # covers the full circle
    flips = [np.linalg.det(random_transform(AugmentConfig(yaw=False, scale=None, flip_x=True), rng))
             for _ in range(100)]
    assert set(np.round(flips).tolist()) == {-1.0, 1.0}
    assert random_transform(AugmentConfig(yaw=False, scale=None), rng).tolist() == np.eye(3).tolist()


def test_augment_points_keeps_intensity_and_shape():
    rng = np.random.default_rng(4)
    pts, _ = _scan(rng, 500)
    out = augment_points(pts, AugmentConfig(jitter_sigma=0.01), np.random.default_rng(0))
    np.testing.assert_array_equal(out[:, 3], pts[:, 3])
    m = random_transform(AugmentConfig(jitter_sigma=0.01), np.random.default_rng(0))   # same draws
    noise = out[:, :3] - pts[:, :3] @ m.T
    assert 0.003 < noise.std() < 0.02 and np.abs(noise).max() <= 0.05 + 1e-6
    assert AugmentConfig.from_dict({"scale": [0.9, 1.1], "flip_x": True}).scale == (0.9, 1.1)
    assert AugmentConfig.from_dict(None) is None
    with pytest.raises(KeyError, match="unknown keys \\['rotate'\\]"):
        AugmentConfig.from_dict({"rotate": True})


def test_collate_and_map_back_to_points():
    rng = np.random.default_rng(5)
    samples = []
    for k, n in enumerate((400, 250, 600)):
        pts, raw = _scan(rng, n)
        samples.append(make_sample(pts, raw, label_config=CFG, voxel_size=0.4, max_voxels=150 if k == 2 else None,
                                   seed=k, sequence="08", frame=f"{k:06d}"))
    b = collate(samples)
    assert b.batch_size == 3 and b.frames == ["000000", "000001", "000002"]
    assert b.coords.shape[1] == 4 and b.coords.dtype == torch.int32
    assert b.voxel_offsets.tolist() == [0, len(samples[0].coords), len(samples[0].coords) + len(samples[1].coords),
                                        sum(len(s.coords) for s in samples)]
    assert len(samples[2].coords) == 150 and (samples[2].inverse == -1).any()   # voxel cap drops points
    for bi, (s, inv) in enumerate(zip(samples, b.split_points(b.inverse))):
        ok = inv >= 0
        assert (b.coords[inv[ok], 0] == bi).all()
        np.testing.assert_array_equal(b.coords[inv[ok], 1:].numpy(), s.coords[s.inverse[ok]].numpy())
    # predictions given per voxel come back to every point; points without a voxel get 255
    fake_pred = torch.arange(len(b.coords)) % 19
    per_point = b.point_predictions(fake_pred)
    ok = b.inverse >= 0
    np.testing.assert_array_equal(per_point[ok].numpy(), fake_pred[b.inverse[ok]].numpy())
    assert (per_point[~ok] == 255).all() and (~ok).sum() > 0
    logits = torch.nn.functional.one_hot(fake_pred, 19).float()
    assert torch.equal(b.point_predictions(logits), per_point)
    assert b.point_labels.shape[0] == sum(s.num_points for s in samples)
    with pytest.raises(ValueError, match="cannot mix labeled and unlabeled"):
        collate([samples[0], make_sample(*_scan(rng, 10)[:1], label_config=CFG)])


def test_dataset_over_simulated_sequences(tmp_path):
    assert sim_main(["--out", str(tmp_path), "--sequences", "08", "--scans", "2", "--seed", "1",
                     "--azimuth-steps", "200", "--quiet"]) == 0
    ds = SemanticKittiDataset(tmp_path, "val", voxel_size=0.1)
    assert len(ds) == 2 and ds.labeled
    s = ds[1]
    assert (s.sequence, s.frame) == ("08", "000001")
    raw = np.fromfile(tmp_path / "sequences/08/labels/000001.label", "<u4") & 0xFFFF
    np.testing.assert_array_equal(s.raw_labels.numpy(), raw)
    assert s.num_points == raw.size and (s.inverse >= 0).all()
    # augmentation is reproducible through torch's global seed and changes the voxels
    aug = SemanticKittiDataset(tmp_path, [8], voxel_size=0.1, augment=AugmentConfig(), max_voxels=500)
    torch.manual_seed(0)
    a1 = aug[0]
    torch.manual_seed(0)
    a2 = aug[0]
    assert torch.equal(a1.coords, a2.coords) and len(a1.coords) == 500
    assert not torch.equal(aug[0].coords, a1.coords)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    batch = next(iter(loader))
    assert batch.batch_size == 2 and batch.sparse().coords.shape == batch.coords.shape


def test_dataset_errors_name_the_problem(tmp_path):
    rng = np.random.default_rng(6)
    pts, raw = _scan(rng, 20)
    write_sequence(tmp_path, 0, [Scan(pts, raw, None)])
    write_label_file(tmp_path / "sequences/00/labels/000000.label", np.full(20, 33, np.uint16))
    ds = SemanticKittiDataset(tmp_path, [0])
    with pytest.raises(ValueError, match=r"000000\.label: 20 points carry raw ids unknown .*\[33\]"):
        ds[0]
    (tmp_path / "sequences/00/labels/000000.label").unlink()
    (tmp_path / "sequences/00/labels").rmdir()
    with pytest.raises(SemanticKittiFormatError, match=r"sequences/00/labels: missing labels directory"):
        SemanticKittiDataset(tmp_path, [0])
    unlabeled = SemanticKittiDataset(tmp_path, [0], labeled=False)
    assert unlabeled[0].point_labels is None and unlabeled[0].num_points == 20
