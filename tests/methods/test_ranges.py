"""The range rules that every method's config shares: each names the field and the range in
one line, and a NaN fails every rule."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from adasim_ray.methods.ranges import check_ranges


@pytest.mark.parametrize(
    ("rule", "bad", "good", "message"),
    [
        ("positive", 0.0, 1e-9, "x: must be > 0, got 0.0"),
        ("non_negative", -1, 0, "x: must be >= 0, got -1"),
        ("unit", 1.5, 1.0, "x: must lie in [0, 1], got 1.5"),
        ("unit_open", 1.0, 0.0, "x: must lie in [0, 1), got 1.0"),
    ],
)
def test_each_rule_names_the_field_and_its_range(rule, bad, good, message):
    check_ranges(SimpleNamespace(x=good), **{rule: ["x"]})
    with pytest.raises(ValueError) as err:
        check_ranges(SimpleNamespace(x=bad), **{rule: ["x"]})
    assert str(err.value) == message
    with pytest.raises(ValueError, match=r"^x: must .*got nan$"):
        check_ranges(SimpleNamespace(x=math.nan), **{rule: ["x"]})


def test_the_first_bad_field_is_named():
    config = SimpleNamespace(a=1, b=-1, c=-2)
    with pytest.raises(ValueError, match=r"^b: must be >= 0, got -1$"):
        check_ranges(config, positive=["a"], non_negative=["b", "c"])
