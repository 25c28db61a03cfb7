from pathlib import Path

import pytest

from archiver.config import ConfigError, Settings, redact_url


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.broker_url == s.redis_url
    assert s.redis_prefix == "archiver"
    assert (s.retry_min_seconds, s.retry_max_seconds) == (5.0, 300.0)
    assert s.sink_url is None


def test_storages_and_fractions() -> None:
    s = Settings.from_env(
        {
            "ARCHIVER_STORAGES": "default=/srv/a, other=/srv/b",
            "ARCHIVER_RETRY_MIN_SECONDS": "0.005",
            "ARCHIVER_BROKER_URL": "amqp://guest@localhost//",
        }
    )
    assert s.storages == {"default": Path("/srv/a"), "other": Path("/srv/b")}
    assert s.retry_min_seconds == 0.005
    assert s.broker_url.startswith("amqp://")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ARCHIVER_STORAGES": "default"}, "name=/path"),
        ({"ARCHIVER_STORAGES": "default=relative"}, "absolute"),
        ({"ARCHIVER_STORAGES": "a=/x,a=/y"}, "twice"),
        ({"ARCHIVER_STORAGES": "../x=/y"}, "storage name"),
        ({"ARCHIVER_RETRY_MIN_SECONDS": "soon"}, "number"),
        ({"ARCHIVER_RETRY_MIN_SECONDS": "-1"}, "positive"),
        ({"ARCHIVER_RETRY_MIN_SECONDS": "10", "ARCHIVER_RETRY_MAX_SECONDS": "1"}, "below"),
        ({"ARCHIVER_REDIS_PREFIX": "a{b}"}, "unsafe"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_retry_delay_doubles_to_the_cap() -> None:
    s = Settings(retry_min_seconds=5, retry_max_seconds=300)
    assert [s.retry_delay(n) for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert s.retry_delay(10_000) == 300


def test_redact_url() -> None:
    assert redact_url("redis://user:hunter2@host:6380/0") == "redis://user:***@host:6380/0"
    assert redact_url("redis://:hunter2@host/0") == "redis://:***@host/0"
    assert redact_url("redis://host/0") == "redis://host/0"
