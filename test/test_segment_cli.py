"""``i2p-segment``: which scans it reads, where it writes, that the files hold the pipeline's labels, errors."""

from pathlib import Path

import numpy as np
import pytest
from node_helpers import stub_pipeline

from i2p_ros import segment_cli
from i2p_ros.data.semantic_kitti import read_label_file, write_points


@pytest.fixture
def stub(monkeypatch):
    """The CLI with a fast stand-in network (the real model is covered by test_node_same_labels)."""
    pipeline = stub_pipeline()
    seen = {}

    def fake_create(backend, request):
        seen.update(backend=backend, request=request)
        return pipeline

    monkeypatch.setattr(segment_cli, "create_pipeline", fake_create)
    monkeypatch.setattr(segment_cli, "resolve_checkpoint", lambda c: Path(c or "demo.pt"))
    return pipeline, seen


def _scans(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pts = np.column_stack([rng.uniform(-30, 30, (50 + i, 2)), rng.uniform(-2, 2, 50 + i),
                               rng.random(50 + i)]).astype(np.float32)
        write_points(folder / f"{i:06d}.bin", pts)
        out.append(pts)
    return out


@pytest.mark.parametrize("layout", ["sequence", "velodyne"])
def test_every_scan_of_a_folder_gets_its_label_file(tmp_path, stub, layout):
    pipeline, seen = stub
    scans = _scans(tmp_path / "seq" / "velodyne", 3)
    src = tmp_path / "seq" if layout == "sequence" else tmp_path / "seq" / "velodyne"
    assert segment_cli.main(["--checkpoint", "m.pt", "--input", str(src), "--output", str(tmp_path / "out"),
                             "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000000.label", "000001.label", "000002.label"]
    for i, pts in enumerate(scans):
        sem, inst = read_label_file(tmp_path / "out" / f"{i:06d}.label", len(pts))
        np.testing.assert_array_equal(sem, pipeline.segment(pts).labels)
        assert not inst.any()
    assert seen["backend"] == "torch" and str(seen["request"].checkpoint) == "m.pt"


def test_single_scan_to_a_label_path_and_params_file(tmp_path, stub):
    pipeline, seen = stub
    (pts,) = _scans(tmp_path, 1)
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    device: cpu\n    range_max: [10.0, 10.0, 1.0]\n")
    out = tmp_path / "x" / "scan.label"
    assert segment_cli.main(["--input", str(tmp_path / "000000.bin"), "--output", str(out),
                             "--params-file", str(params), "--quiet"]) == 0
    sem, _ = read_label_file(out, len(pts))
    np.testing.assert_array_equal(sem, pipeline.segment(pts).labels)
    req = seen["request"]
    assert req.device == "cpu" and req.bounds[1] == (10.0, 10.0, 1.0) and req.bounds[0] == (-51.2, -51.2, -4.0)


def test_errors_are_reported_without_a_traceback(tmp_path, stub, capsys):
    assert segment_cli.main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert segment_cli.main(["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")]) == 2
    assert "no .bin scans" in capsys.readouterr().err
    _scans(tmp_path / "two", 2)
    (tmp_path / "file").write_text("x")
    assert segment_cli.main(["--input", str(tmp_path / "two"), "--output", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert segment_cli.main(["--input", str(tmp_path / "two"), "--output", str(tmp_path / "o"),
                             "--device", "gpu"]) == 2
    assert "device" in capsys.readouterr().err
