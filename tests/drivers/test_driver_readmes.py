"""REGISTERS.md stays the source: each driver's README lists every register its maps read or write, with the
source (REGISTERS.md section and source letter) and the confidence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.drivers.conftest import REGISTRY

ROW = re.compile(r"^\| (0x[0-9A-F]{4}) \| `([a-z0-9_]+)` \| (\d+) \| (R|RW|W) \| (HIGH|MED|LOW|INFERRED) \|"
                 r" [^|]+ \| ([^|]+) \|", re.M)


def readme_rows(key: str) -> dict[tuple[int, str], tuple[int, str, str, str]]:
    text = (Path(__file__).resolve().parents[2] / "drivers" / key / "README.md").read_text(encoding="utf-8")
    return {(int(m[1], 16), m[2]): (int(m[3]), m[4], m[5], m[6].strip()) for m in ROW.finditer(text)}


@pytest.mark.parametrize("key", sorted(REGISTRY))
def test_every_mapped_register_is_in_the_readme_with_source_and_confidence(key):
    rows = readme_rows(key)
    assert rows, f"drivers/{key}/README.md has no register table"
    for name, specs in REGISTRY[key].register_maps().items():
        for spec in specs:
            row = rows.get((spec.address, spec.key))
            assert row is not None, f"{key} map {name}: 0x{spec.address:04X} {spec.key} is not in the README"
            count, rw, confidence, source = row
            assert (count, rw, confidence) == (spec.count, spec.rw, spec.confidence), (name, spec.key, row)
            assert re.search(r"§\d+", source) or "config" in source, (spec.key, source)
            if "W" in spec.rw and confidence != "INFERRED":
                assert re.search(r"\[[A-Z]\]|manual", source), f"written register {spec.key} names no source"
