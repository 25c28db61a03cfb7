"""Fixtures of the multi-host suite: a network of test hosts, removed after each test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.hosts.network import Network, remove_leftovers
from tests.support import missing_server


@pytest.fixture
def network() -> Iterator[Network]:
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            missing_server(f"{tool} is needed for test hosts (Debian: iproute2, nftables)")
    remove_leftovers()
    made = Network()
    try:
        yield made
    finally:
        made.close()
