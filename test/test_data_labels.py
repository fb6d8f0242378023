"""Label configuration: the shipped YAML's properties, checked against the raw YAML, and each validation error."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from i2p_ros.data.labels import (
    IGNORE_INDEX,
    LabelConfigError,
    UnknownLabelError,
    default_label_config_path,
    load_label_config,
)

# the official SemanticKITTI raw ids (semantic-kitti-api), written out independently of the YAML
OFFICIAL_RAW_IDS = {0, 1, 10, 11, 13, 15, 16, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 52, 60, 70, 71, 72, 80,
                    81, 99, 252, 253, 254, 255, 256, 257, 258, 259}
OFFICIAL_CLASSES = ["car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist",
                    "road", "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk",
                    "terrain", "pole", "traffic-sign"]


@pytest.fixture(scope="module")
def raw_yaml():
    return yaml.safe_load(default_label_config_path().read_text())


@pytest.fixture(scope="module")
def cfg():
    return load_label_config()


def test_shipped_yaml_has_official_ids_and_19_classes(raw_yaml, cfg):
    assert set(raw_yaml["labels"]) == OFFICIAL_RAW_IDS
    assert cfg.num_classes == 19
    assert cfg.class_names == OFFICIAL_CLASSES
    assert cfg.sequences("train") == [0, 1, 2, 3, 4, 5, 6, 7, 9, 10]
    assert cfg.sequences("val") == [8]
    assert cfg.sequences("test") == list(range(11, 22))


def test_every_raw_id_maps_like_the_yaml_says(raw_yaml, cfg):
    lmap = raw_yaml["learning_map"]
    for raw in raw_yaml["labels"]:
        expected = IGNORE_INDEX if lmap[raw] == 0 else lmap[raw] - 1   # documented shift, 0 -> 255
        assert int(cfg.to_train(np.array([raw]))[0]) == expected, raw
    # spot checks written by hand
    assert cfg.to_train(np.array([40, 60, 252, 99, 0, 1, 52, 81])).tolist() == [8, 8, 0, 255, 255, 255, 255, 18]


def test_inverse_is_consistent(raw_yaml, cfg):
    t = np.arange(cfg.num_classes)
    raw = cfg.to_raw(t)
    assert [raw_yaml["learning_map"][int(r)] for r in raw] == list(range(1, 20))
    assert cfg.to_train(raw).tolist() == t.tolist()
    assert cfg.to_raw(np.array([255, 19, 200])).tolist() == [0, 0, 0]
    assert cfg.to_raw(np.array([8])).tolist() == [40]


def test_colors_are_converted_from_bgr(cfg):
    # color_map car = [245, 150, 100] (BGR), vegetation = [0, 175, 0]
    assert cfg.colors_rgb(np.array([10, 70])).tolist() == [[100, 150, 245], [0, 175, 0]]
    assert cfg.train_colors_rgb.shape == (19, 3)
    assert cfg.train_colors_rgb[0].tolist() == [100, 150, 245]


def test_unknown_raw_ids_raise_naming_source_and_ids(cfg):
    with pytest.raises(UnknownLabelError, match=r"scan42\.label.*\[7, 300\]"):
        cfg.to_train(np.array([40, 7, 300, 7], dtype=np.uint16), source="scan42.label")


def _write_variant(tmp_path: Path, raw_yaml: dict, mutate) -> Path:
    doc = yaml.safe_load(yaml.safe_dump(raw_yaml))   # deep copy
    mutate(doc)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.mark.parametrize("mutate, pattern", [
    (lambda d: d["learning_map"].pop(44), r"raw id 44 \(parking\) has no learning_map entry"),
    (lambda d: d["color_map"].pop(81), r"raw id 81 \(traffic-sign\) has no color_map entry"),
    (lambda d: d["learning_map_inv"].__setitem__(9, 44), r"inverse inconsistent: learning_map_inv\[9\] = 44"),
    (lambda d: d["learning_map"].__setitem__(40, 25), r"learning_map\[40\] = 25 is not a learning_map_inv class"),
    (lambda d: d["learning_ignore"].pop(19), r"learning_ignore classes"),
    (lambda d: d.pop("learning_map_inv"), r"missing keys \['learning_map_inv'\]"),
    (lambda d: d["color_map"].__setitem__(10, [1, 2]), r"color_map\[10\] must be 3 ints"),
])
def test_malformed_config_errors_name_file_and_key(tmp_path, raw_yaml, mutate, pattern):
    p = _write_variant(tmp_path, raw_yaml, mutate)
    with pytest.raises(LabelConfigError, match=pattern) as exc:
        load_label_config(p)
    assert str(p) in str(exc.value)
