"""Config validation: errors name the file and the key; types are enforced; overrides apply."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from i2p_ros.config import ConfigError, apply_overrides, from_mapping, load_config, to_mapping


@dataclass(frozen=True)
class Optim:
    lr: float = 0.1
    nesterov: bool = True


@dataclass(frozen=True)
class Cfg:
    name: str
    mode: Literal["io", "all"] = "all"
    crop: tuple[float, float, float] = (1.0, 2.0, 3.0)
    epochs: int = 3
    seeds: list[int] = field(default_factory=list)
    optim: Optim = field(default_factory=Optim)
    checkpoint: str | None = None

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


def test_valid_config_with_defaults_and_nesting(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: r18\nmode: io\ncrop: [4, 5, 6]\noptim: {lr: 0.24}\nseeds: [1, 2]\n")
    c = load_config(Cfg, p)
    assert c == Cfg(name="r18", mode="io", crop=(4.0, 5.0, 6.0), seeds=[1, 2], optim=Optim(lr=0.24))
    assert to_mapping(c)["crop"] == [4.0, 5.0, 6.0]


@pytest.mark.parametrize("text, message", [
    ("name: a\nmdoe: io\n", "unknown key 'mdoe' (did you mean 'mode'?)"),
    ("name: a\nmode: bn\n", "c.yaml.mode: expected one of 'io', 'all', got 'bn'"),
    ("name: a\nepochs: 2.5\n", "c.yaml.epochs: expected an integer"),
    ("name: a\nepochs: 0\n", "epochs must be >= 1"),
    ("name: a\ncrop: [1, 2]\n", "c.yaml.crop: expected 3 values, got 2"),
    ("name: a\noptim: {nesterov: 1}\n", "c.yaml.optim.nesterov: expected true/false"),
    ("mode: io\n", "required key 'name' is missing"),
    ("name: [unclosed\n", "invalid YAML"),
    ("- 1\n- 2\n", "expected a mapping at the top level"),
])
def test_errors_name_file_and_key(tmp_path, text, message):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, p)
    assert message in str(err.value)
    assert str(p) in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_config(Cfg, tmp_path / "nope.yaml")


def test_overrides_parse_yaml_values_and_nest():
    data = apply_overrides({"name": "a", "optim": {"lr": 0.1}}, ["optim.lr=0.5", "seeds=[3]", "mode=io"])
    assert from_mapping(Cfg, data) == Cfg(name="a", mode="io", seeds=[3], optim=Optim(lr=0.5))
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        apply_overrides({}, ["lr"])
    with pytest.raises(ConfigError, match="'name' is not a section"):
        apply_overrides({"name": "a"}, ["name.x=1"])
