"""Shared fixtures: a private Redis server, an S3 endpoint on loopback, the system under test.

Every server here is real. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
import redis

from archiver.dev.local_redis import LocalRedis, RedisUnavailable
from archiver.store.client import connect
from archiver.store.keys import RedisKeys
from archiver.store.state_store import RedisStateStore
from archiver.store.streams import Streams
from tests.clock import TEST_CLOCK, Clock
from tests.faults import FaultProxy
from tests.support import S3Endpoint, System, missing_server

# A developer's own settings must not change what is tested: every ARCHIVER_* variable goes,
# but the suite's own knobs (ARCHIVER_TEST_*, the chaos and fuzz sizes).
_SUITE_KNOBS = ("ARCHIVER_TEST_", "ARCHIVER_CHAOS_", "ARCHIVER_FUZZ_")
for _name in [n for n in os.environ if n.startswith("ARCHIVER_")]:
    if not _name.startswith(_SUITE_KNOBS):
        del os.environ[_name]

# boto3's credential chain reads these in the test process and in every child it starts.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """Our own redis-server on a free port, so tests never touch a shared instance."""
    try:
        server = LocalRedis(tmp_path_factory.mktemp("redis")).start()
    except RedisUnavailable as exc:
        missing_server(f"no Redis server to start: {exc}")
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: LocalRedis) -> str:
    connect(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    return connect(redis_url)


@pytest.fixture
def keys() -> RedisKeys:
    return RedisKeys("archiver")


@pytest.fixture
def store(redis_client: redis.Redis, keys: RedisKeys) -> RedisStateStore:
    return RedisStateStore(redis_client, keys)


@pytest.fixture
def clock(redis_client: redis.Redis) -> Clock:
    return Clock(redis_client)


@pytest.fixture
def clocked_store(redis_client: redis.Redis, keys: RedisKeys, clock: Clock) -> RedisStateStore:
    """``store`` whose scripts read ``clock``: leases and pauses run out when the test says."""
    return RedisStateStore(redis_client, keys, script_prelude=TEST_CLOCK)


@pytest.fixture
def streams(redis_client: redis.Redis, keys: RedisKeys) -> Streams:
    return Streams(redis_client, keys)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """moto in server mode: a real HTTP S3 endpoint on loopback, in its own process."""
    endpoint = S3Endpoint.start(tmp_path_factory.mktemp("s3") / "moto.log")
    yield endpoint
    endpoint.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: S3Endpoint) -> str:
    name = f"archive-{uuid.uuid4().hex[:12]}"
    s3_endpoint.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The machine's RabbitMQ (``scripts/test`` starts it when it is installed but stopped)."""
    url = os.environ.get("ARCHIVER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    with kombu.Connection(url, connect_timeout=5) as connection:
        try:
            connection.ensure_connection(max_retries=3)
        except Exception as exc:
            missing_server(f"RabbitMQ does not answer at {url}: {exc}")
    return url


@pytest.fixture(params=["redis-broker", "rabbitmq-broker"])
def system_on_each_broker(
    request: pytest.FixtureRequest, redis_url: str, tmp_path: Path, rabbitmq_url: str
) -> Iterator[System]:
    """``system``, once with Redis as the Celery broker and once with RabbitMQ. On RabbitMQ,
    which other runs on the machine may share, the storage (and so the queue) is this test's
    own."""
    storage = f"rabbit-{uuid.uuid4().hex[:8]}" if request.param == "rabbitmq-broker" else "default"
    sys_ = System(
        redis_url=redis_url, tmp=tmp_path, sink_url=(tmp_path / "bucket").as_uri(), storage=storage
    )
    if request.param == "rabbitmq-broker":
        sys_.env_overrides["ARCHIVER_BROKER_URL"] = rabbitmq_url
    yield sys_
    sys_.close()
    if request.param == "rabbitmq-broker":
        delete_queue(rabbitmq_url, f"archiver.{sys_.storage}")


def delete_queue(url: str, queue: str) -> None:
    """Remove the test's own queue from the shared broker."""
    with kombu.Connection(url, connect_timeout=5) as connection:
        channel: Any = connection.channel()
        try:
            channel.queue_delete(queue)
        except connection.channel_errors:
            pass  # no such queue yet
        finally:
            with contextlib.suppress(*connection.channel_errors, *connection.connection_errors):
                channel.close()


@pytest.fixture
def system(redis_url: str, tmp_path: Path) -> Iterator[System]:
    """The archiver with a filesystem bucket; start its processes in the test."""
    sys_ = System(redis_url=redis_url, tmp=tmp_path, sink_url=(tmp_path / "bucket").as_uri())
    yield sys_
    sys_.close()


@pytest.fixture
def s3_system(
    redis_url: str, tmp_path: Path, s3_endpoint: S3Endpoint, s3_bucket: str
) -> Iterator[System]:
    """The archiver with an S3 bucket on the loopback endpoint."""
    sys_ = System(
        redis_url=redis_url, tmp=tmp_path, sink_url=s3_endpoint.sink_url(s3_bucket, "wal")
    )
    yield sys_
    sys_.close()


@pytest.fixture
def proxy(s3_endpoint: S3Endpoint) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the S3 endpoint."""
    host, port = s3_endpoint.url.removeprefix("http://").split(":")
    fault_proxy = FaultProxy(host, int(port))
    yield fault_proxy
    fault_proxy.close()


# Tests marked by the folder they live in, so that ``pytest -m "not chaos"`` works (CI runs all).
_MARKED_FOLDERS = ("system", "chaos", "hosts", "ops")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        folder = item.path.relative_to(tests).parts[0]
        if folder in _MARKED_FOLDERS:
            item.add_marker(folder)
