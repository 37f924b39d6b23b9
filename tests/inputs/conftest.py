"""The input servers (HTTP and HTTPS on loopback), started once per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.input_server import Servers, running_servers


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with running_servers(tmp_path_factory.mktemp("tls")) as running:
        yield running
