"""``docs/guarantees.md`` names only tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).parent
DOC = TESTS.parent / "docs" / "guarantees.md"


def _named_tests() -> list[tuple[str, str]]:
    """(file, test) for every test a table row names; ``::test`` goes with the file before."""
    named = []
    for line in DOC.read_text().splitlines():
        if not line.startswith("|"):
            continue
        current = None
        for ref in re.findall(r"`([\w/.]*::\w+|[\w/]+\.py)`?", line):
            path, _, test = ref.partition("::")
            if path:
                current = path
            if test:
                assert current is not None, line
                named.append((current, test))
    return named


def test_every_test_the_guarantees_name_exists() -> None:
    named = _named_tests()
    assert len(named) > 60
    missing = [
        f"{path}::{test}"
        for path, test in named
        if not (TESTS / path).is_file()
        or not re.search(rf"^def {test}\(", (TESTS / path).read_text(), re.MULTILINE)
    ]
    assert missing == []
