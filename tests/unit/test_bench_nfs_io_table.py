"""bench.nfs_io's table: medians per server and, per Ganesha configuration, the median and
range of the per-repetition ratios (the figures docs/benchmarks.md quotes)."""

from __future__ import annotations

from bench.nfs_io import table

REPS = [
    {"floatlock": 10.0, "ganesha": 5.0, "ganesha-shared": 20.0},
    {"floatlock": 12.0, "ganesha": 6.0, "ganesha-shared": 12.0},
    {"floatlock": 9.0, "ganesha": 3.0, "ganesha-shared": 9.0},
]


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_each_ganesha_configuration_gets_its_own_paired_ratio() -> None:
    head, row = _rows(table([("cell", REPS)]))
    assert head == [
        "floatlock",
        "ganesha",
        "floatlock/ganesha",
        "ratio",
        "range",
        "ganesha-shared",
        "floatlock/ganesha-shared",
        "ratio",
        "range",
    ]
    # Medians 10 / 5 / 12; ratios per repetition 2, 2, 3 and 0.5, 1, 1 (not the ratio of the
    # medians: 10 / 12 would be 0.83).
    assert row == ["cell", "10", "5", "2.00", "2.00-3.00", "12", "1.00", "0.50-1.00"]


def test_one_configuration_or_floatlock_alone() -> None:
    only = [{"floatlock": r["floatlock"], "ganesha-shared": r["ganesha-shared"]} for r in REPS]
    assert _rows(table([("cell", only)]))[1] == ["cell", "10", "12", "1.00", "0.50-1.00"]
    alone = [{"floatlock": r["floatlock"]} for r in REPS]
    head, row = _rows(table([("cell", alone)]))
    assert head == ["floatlock", "range"] and row == ["cell", "10", "9-12"]
