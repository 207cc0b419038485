"""vidclip.core.config: the generic dataclass + YAML machinery, on a config of its own (no training)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from vidclip.core.config import (
    apply_dataclass_overrides,
    check_listed_rules,
    dump_dataclass_yaml,
    load_dataclass_yaml,
    split_override,
)
from vidclip.core.errors import ConfigError


@dataclass
class Inner:
    rate: float = 0.5
    mode: str = "fast"
    extra: dict = field(default_factory=dict)


@dataclass
class Outer:
    name: str = "x"
    count: int = 1
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)


def _check(dotted, value, where):
    check_listed_rules(dotted, value, where, choices={"inner.mode": ("fast", "slow")}, positive={"count"},
                       non_negative={"inner.rate"})


def test_yaml_overrides_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("count: 3\ninner: {rate: 1e-3}\n")
    cfg = load_dataclass_yaml(Outer, path, ["inner.mode=slow", "limit=7", "inner.extra.depth=2"], _check,
                              defaults={"name": "c"})
    assert cfg == Outer("c", 3, 7, Inner(1e-3, "slow", {"depth": 2}))
    assert apply_dataclass_overrides(cfg, ["limit=none"], _check).limit is None
    (tmp_path / "dump.yaml").write_text(dump_dataclass_yaml(cfg))
    assert load_dataclass_yaml(Outer, tmp_path / "dump.yaml", [], _check) == cfg


@pytest.mark.parametrize("text, overrides, match", [
    ("cuont: 2\n", [], r"c\.yaml: unknown key 'cuont'; did you mean 'count'\?"),
    ("count: 0\n", [], r"c\.yaml: count must be > 0, got 0"),
    ("inner: {mode: warp}\n", [], r"inner\.mode must be one of \['fast', 'slow'\]"),
    ("", ["count=two"], r"override 'count=two': count: expected an integer"),
    ("", ["inner=3"], r"inner is a section"),
    ("", ["count"], r"override 'count': expected KEY=VALUE \(e\.g\. count=2\)"),
])
def test_errors_name_the_file_or_override_and_the_key(tmp_path, text, overrides, match):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_dataclass_yaml(Outer, tmp_path / "c.yaml", overrides, _check, example="count=2")


def test_split_override():
    assert split_override(" a.b =c=d") == ("a.b", "c=d")
    with pytest.raises(ConfigError, match=r"expected KEY=VALUE \(e\.g\. optim\.lr=3e-4\)"):
        split_override("optim.lr", "optim.lr=3e-4")
