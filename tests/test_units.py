from __future__ import annotations

import pytest

from batchprof.errors import ConfigError
from batchprof.units import format_bytes, format_seconds, parse_bytes


@pytest.mark.parametrize("text,expected", [
    ("512MiB", 512 * 2**20), ("2GiB", 2 * 2**30), ("1.5GB", 1_500_000_000), ("100", 100),
    (4096, 4096), ("1 KiB", 1024), ("3g", 3_000_000_000), ("2gib", 2 * 2**30),
])
def test_parse_bytes_accepts_documented_forms(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["2 gigs", "", "GiB", "-1GiB", "0", 0, -5, True, None, "1e400"])
def test_parse_bytes_rejects_with_actionable_message(bad):
    with pytest.raises(ConfigError) as info:
        parse_bytes(bad)
    assert "memory size" in str(info.value)


def test_format_bytes_never_shows_missing_as_zero():
    assert format_bytes(None) == "n/a"
    assert format_bytes(1536) == "1.50 KiB"
    assert format_bytes(12) == "12 B"


def test_format_seconds_picks_a_unit_and_never_shows_missing_as_zero():
    assert [format_seconds(s) for s in (1.5, 2.06e-3, 90e-6, 3e-9)] == [
        "1.5 s", "2.06 ms", "90 us", "3 ns"]
    assert format_seconds(None) == "n/a"
