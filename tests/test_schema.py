from dataclasses import dataclass

import pytest

from get3d.schema import ConfigError, parse_section, spec, to_dict


@dataclass(frozen=True)
class Inner:
    size: int = spec(4, min=1)


@dataclass(frozen=True)
class Section:
    count: int = spec(3, min=0, max=10)
    rate: float = spec(0.5, min=0.0)
    name: str = spec("a", choices=("a", "b"))
    flag: bool = spec(False)
    pair: tuple[float, float] = spec((0.0, 1.0))
    inner: Inner = spec(default_factory=Inner)
    maybe: int | None = spec(None)


def test_defaults_and_roundtrip():
    s = parse_section(Section, {}, "sec")
    assert s == Section()
    assert parse_section(Section, to_dict(s), "sec") == s


def test_int_coerced_to_float_and_list_to_tuple():
    s = parse_section(Section, {"rate": 2, "pair": [1, 2], "inner": {"size": 2}, "maybe": 5}, "sec")
    assert s.rate == 2.0 and isinstance(s.rate, float)
    assert s.pair == (1.0, 2.0) and s.inner.size == 2 and s.maybe == 5


@pytest.mark.parametrize("data, fragment", [
    ({"cnt": 1}, "sec.cnt: unknown key"),
    ({"count": "three"}, "sec.count: expected an integer, got str 'three'"),
    ({"count": -1}, "sec.count: -1 is below the minimum 0"),
    ({"count": 11}, "sec.count: 11 is above the maximum 10"),
    ({"count": True}, "sec.count: expected an integer"),
    ({"rate": "fast"}, "sec.rate: expected a number"),
    ({"name": "c"}, "sec.name: 'c' is not allowed"),
    ({"flag": "yes"}, "sec.flag: expected true/false"),
    ({"pair": [1]}, "sec.pair: expected 2 items"),
    ({"inner": {"size": 0}}, "sec.inner.size: 0 is below the minimum 1"),
    ({"inner": {"bogus": 1}}, "sec.inner.bogus: unknown key"),
])
def test_errors_name_key_and_value(data, fragment):
    with pytest.raises(ConfigError) as err:
        parse_section(Section, data, "sec")
    assert fragment in str(err.value)


def test_section_must_be_mapping():
    with pytest.raises(ConfigError, match="sec: expected a mapping"):
        parse_section(Section, [1, 2], "sec")
