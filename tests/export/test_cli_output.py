"""gd-export prints mAP in the unit gd-train, gd-eval and the model cards use."""

from export.cli import format_map


def test_map_is_a_fraction_with_three_decimals():
    # 0.2374 is 23.74 %: a fraction in 0..1, rounded to 3 decimals, never a percentage
    assert format_map({"0.1": 0.2374, "0.5": 0.2156}) == "@0.1: 0.237  @0.5: 0.216"
