from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import services


@pytest.fixture(scope="session")
def redis_server() -> Iterator[services.RedisServer]:
    """One real redis-server for the whole session; tests that share it use their own key prefixes or flush."""
    with services.redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[services.PostgresServer]:
    with services.postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[list[services.RedisServer]]:
    with services.redis_cluster() as servers:
        yield servers
