from dataclasses import dataclass, field

import pytest

from survsr import config
from survsr.config import ConfigError


@dataclass
class Inner:
    size: int = 32
    method: str = "area"


@dataclass
class Schema:
    name: str = "x"
    rate: float = 1.0
    flags: list[int] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)


def test_defaults_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\ninner:\n  size: 16\n")
    cfg = config.load(Schema, p, ["inner.method=bicubic", "rate=2", "flags=[1, 2]"])
    assert cfg.name == "a" and cfg.inner.size == 16 and cfg.inner.method == "bicubic"
    assert cfg.rate == 2.0 and isinstance(cfg.rate, float) and cfg.flags == [1, 2]


def test_unknown_key_names_file_and_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("inner:\n  sise: 16\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:inner\.sise: unknown key"):
        config.load(Schema, p)


def test_wrong_type_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"inner\.size: expected an integer"):
        config.load(Schema, None, ["inner.size=big"])
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(Schema, tmp_path / "nope.yaml")


def test_exponent_floats_parse_as_yaml_1_2_does(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-16`` as a string; a float key takes it, and the file form too."""
    p = tmp_path / "c.yaml"
    p.write_text("rate: 1e-16\n")
    assert config.load(Schema, p).rate == 1e-16
    assert config.load(Schema, None, ["rate=-2.5E+3"]).rate == -2500.0
    with pytest.raises(ConfigError, match=r"rate: expected a number, got '1e-16x'"):
        config.load(Schema, None, ["rate=1e-16x"])
    with pytest.raises(ConfigError, match=r"inner\.method: expected a string"):
        config.load(Schema, None, ["inner.method=[1]"])
    assert config.load(Schema, None, ["inner.method=1e-3"]).inner.method == "1e-3"  # a str key stays a str


def test_hash_is_stable_and_sensitive():
    a = config.load(Schema, None, ["rate=2"])
    b = config.load(Schema, None, ["rate=2.0"])
    c = config.load(Schema, None, ["rate=3"])
    assert config.config_hash(a) == config.config_hash(b) != config.config_hash(c)


def test_override_tokens_vs_paths():
    assert config.is_override("inner.size=12")
    assert not config.is_override("rtsp://cam/stream?a=1")
    assert not config.is_override("videos/a=b.mp4")
