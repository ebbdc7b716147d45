"""Fixtures of the multi-host tests: ``network`` (a :class:`~tests.multihost.netns.Network`, skipped with
the reason where namespaces cannot be made: not root, no ``ip``/``nft``/``socat``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.multihost.netns import Network, install_tools, unavailable


@pytest.fixture(scope="session")
def netns_ready() -> None:
    install_tools()
    reason = unavailable()
    if reason:
        pytest.skip(f"multi-host test needs network namespaces: {reason}")


@pytest.fixture
def network(netns_ready: None) -> Iterator[Network]:
    net = Network()
    try:
        yield net
    finally:
        net.close()
