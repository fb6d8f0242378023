"""i2p-eval: scores every point, writes official .label files that agree with its own metrics, and
refuses checkpoints whose classes do not match the data."""

import json

import numpy as np
import pytest
import torch

from i2p_ros.checkpoint import make_checkpoint, save_atomic
from i2p_ros.data.labels import load_label_config
from i2p_ros.data.semantic_kitti import list_scans, read_label_file, read_points
from i2p_ros.data.sim import main as sim_main
from i2p_ros.evaluate import main as eval_main
from i2p_ros.metrics import segmentation_scores
from i2p_ros.models.build import build_model, load_model_config


@pytest.fixture(scope="module")
def data_and_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    assert sim_main(["--out", str(root), "--sequences", "8", "--scans", "2", "--seed", "5",
                     "--azimuth-steps", "150", "--max-range", "40", "--quiet"]) == 0
    labels = load_label_config()
    torch.manual_seed(0)
    cfg = load_model_config("lite0")
    model, _ = build_model(cfg, prior="none")
    raw_ids = [int(r) for r in labels.train_to_raw_lut[: labels.num_classes]]
    ckpt = save_atomic(make_checkpoint(model, cfg, labels.class_names, raw_ids, "scratch"), root / "m.pt")
    bad = make_checkpoint(model, cfg, labels.class_names[::-1], raw_ids[::-1], "scratch")
    bad_path = save_atomic(bad, root / "bad.pt")
    return root, ckpt, bad_path, labels


def test_eval_metrics_agree_with_the_label_files_it_writes(data_and_ckpt, tmp_path):
    root, ckpt, _, labels = data_and_ckpt
    out, preds = tmp_path / "eval", tmp_path / "preds"
    assert eval_main(["--checkpoint", str(ckpt), "--data", str(root), "--split", "8", "--out", str(out),
                      "--save-labels", str(preds)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert (out / "confusion.png").stat().st_size > 1000
    assert len(report["iou"]) == 19 and report["scans"] == 2
    # recompute from the written files, independently of the evaluation loop
    all_pred, all_gt = [], []
    for ref in list_scans(root, ["08"]):
        n = len(read_points(ref.velodyne))
        pred_file = preds / "sequences" / "08" / "predictions" / f"{ref.frame}.label"
        raw_pred = np.fromfile(pred_file, dtype=np.uint32)
        assert raw_pred.shape == (n,), "one prediction per point"
        assert np.all(raw_pred >> 16 == 0), "instance bits are 0"
        labels.check_raw(raw_pred & 0xFFFF)
        all_pred.append(labels.to_train(raw_pred & 0xFFFF).astype(np.int64))
        all_gt.append(labels.to_train(read_label_file(ref.label)[0]).astype(np.int64))
    pred = torch.from_numpy(np.concatenate(all_pred))
    gt = torch.from_numpy(np.concatenate(all_gt))
    scores = segmentation_scores(pred, gt, labels.num_classes)
    assert report["miou"] == pytest.approx(scores.miou)
    assert report["accuracy"] == pytest.approx(scores.accuracy)


def test_eval_refuses_checkpoint_with_other_classes(data_and_ckpt, tmp_path, capsys):
    root, _, bad, _ = data_and_ckpt
    assert eval_main(["--checkpoint", str(bad), "--data", str(root), "--split", "8", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "classes do not match" in err and str(bad) in err


def test_eval_reports_a_corrupt_checkpoint(data_and_ckpt, tmp_path, capsys):
    root = data_and_ckpt[0]
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert eval_main(["--checkpoint", str(junk), "--data", str(root), "--split", "8"]) == 2
    assert "could not be read" in capsys.readouterr().err
