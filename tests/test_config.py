import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from archiver.cli import main
from archiver.config import Settings, redact_url
from archiver.core.encryption import new_key_text
from archiver.errors import ConfigError

KEY_A, KEY_B = new_key_text(), new_key_text()


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.broker_url == s.redis_url
    assert s.redis_prefix == "archiver"
    assert (s.retry_min_seconds, s.retry_max_seconds) == (5.0, 300.0)
    assert s.sink_url is None
    # Built directly, as tests and benchmarks do: the same derived defaults.
    direct = Settings(redis_url="redis://elsewhere:6380/1")
    assert direct.broker_url == "redis://elsewhere:6380/1"
    assert direct.actor
    assert Settings.from_env({"ARCHIVER_LOG_LEVEL": "warn"}).log_level == "WARNING"


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
        ({"ARCHIVER_REDIS_URL": "sentinel://a:1/0"}, "master"),
        ({"ARCHIVER_REDIS_REPLICA_TIMEOUT_SECONDS": "10"}, "under 10 s"),
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
    # Every password of a list of Sentinels, in ours and in kombu's spelling.
    assert redact_url("sentinel://:pw@a:1,b:2/0?master=m") == "sentinel://:***@a:1,b:2/0?master=m"
    kombu = redact_url("sentinel://:pw@a:1/0;sentinel://:pw@b:2/0")
    assert kombu == "sentinel://:***@a:1/0;sentinel://:***@b:2/0"


def test_sentinel_urls_load_with_their_passwords_hidden() -> None:
    settings = Settings.from_env(
        {
            "ARCHIVER_REDIS_URL": "sentinel://:hunter2@a:26379,b:26380/0?master=m",
            "ARCHIVER_BROKER_URL": "sentinel://:hunter2@a:26379/0;sentinel://:hunter2@b:26380/0",
        }
    )
    assert "hunter2" not in str(settings.effective())


@pytest.mark.parametrize("flag", ["yes", "true", "1", "YES"])
def test_min_replicas_cannot_be_set_with_a_cluster(flag: str) -> None:
    with pytest.raises(ConfigError, match="Redis Cluster"):
        Settings.from_env(
            {
                "ARCHIVER_REDIS_URL": f"redis://127.0.0.1:7000/0?cluster={flag}",
                "ARCHIVER_REDIS_MIN_REPLICAS": "1",
            }
        )


def _table_from_declarations() -> list[str]:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for d in Settings.declared():
        default = "—" if d.default is None else f"`{d.default}`"
        rows.append(f"| `{d.env}` | {default} | {d.help} |")
    return rows


def test_the_readme_table_is_the_declarations() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text().splitlines()
    start = readme.index("| variable | default | meaning |")
    end = next(i for i in range(start, len(readme)) if not readme[i].startswith("|"))
    assert readme[start:end] == _table_from_declarations()


def test_every_setting_is_read_from_its_variable() -> None:
    declared = Settings.declared()
    assert len({d.env for d in declared}) == len(declared)
    defaults = Settings.from_env({})
    changed = Settings.from_env(
        {
            "ARCHIVER_SINK_URL": "file:///srv/bucket",
            "ARCHIVER_REDIS_URL": "redis://h:1/2",
            "ARCHIVER_BROKER_URL": "amqp://guest@h//",
            "ARCHIVER_REDIS_PREFIX": "p",
            "ARCHIVER_REDIS_MIN_REPLICAS": "1",
            "ARCHIVER_REDIS_REPLICA_TIMEOUT_SECONDS": "0.5",
            "ARCHIVER_STORAGES": "s=/srv/s",
            "ARCHIVER_RETRY_MIN_SECONDS": "1",
            "ARCHIVER_RETRY_MAX_SECONDS": "2",
            "ARCHIVER_LEASE_SECONDS": "3",
            "ARCHIVER_DISPATCH_TIMEOUT_SECONDS": "4",
            "ARCHIVER_SWEEP_INTERVAL_SECONDS": "5",
            "ARCHIVER_TASK_TIME_LIMIT_SECONDS": "6",
            "ARCHIVER_ENTRY_FAILURES_BEFORE_STOP": "7",
            "ARCHIVER_LEADER_TTL_SECONDS": "8",
            "ARCHIVER_COMPRESSION": "zstd",
            "ARCHIVER_METRICS_PORT": "9",
            "ARCHIVER_WORKER_METRICS_PORT": "10",
            "ARCHIVER_METRICS_DIR": "/srv/metrics",
            "ARCHIVER_STATE_METRICS_INTERVAL_SECONDS": "11",
            "ARCHIVER_CHAIN_ENTRIES": "12",
            "ARCHIVER_CHAIN_SECONDS": "13",
            "ARCHIVER_LOG_LEVEL": "debug",
            "ARCHIVER_LOG_FORMAT": "json",
            "ARCHIVER_ACTOR": "ops",
            "ARCHIVER_ENCRYPTION_KEYS": f"a:{KEY_A},b:{KEY_B}",
            "ARCHIVER_ENCRYPTION_KEY_ID": "b",
            "ARCHIVER_MIRROR_URLS": "far=file:///srv/mirror",
            "ARCHIVER_ACK_POLICY": "all",
            "ARCHIVER_SCRUB_BYTES_PER_SECOND": "1000000",
            "ARCHIVER_SCRUB_REQUESTS_PER_SECOND": "5",
        }
    )
    before, after = defaults.effective(), changed.effective()
    # The keys file is the other way to give the keys, tried on its own below.
    assert [d.env for d in declared if before[d.env] == after[d.env]] == [
        "ARCHIVER_ENCRYPTION_KEYS_FILE"
    ]
    assert changed.log_level == "DEBUG"
    assert after["ARCHIVER_ENCRYPTION_KEYS"] == "a, b (current: b)"


def test_encryption_keys_come_from_a_file_and_never_show(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"old:{KEY_A}\nnew:{KEY_B}\n")
    env = {"ARCHIVER_ENCRYPTION_KEYS_FILE": str(keys), "ARCHIVER_ENCRYPTION_KEY_ID": "new"}
    settings = Settings.from_env(env)
    assert (settings.keyring.ids, settings.keyring.current) == (["new", "old"], "new")
    for shown in (
        repr(settings),
        CliRunner().invoke(main, ["config"], env=env).output,
        CliRunner().invoke(main, ["config", "--json"], env=env).output,
    ):
        assert KEY_A not in shown
        assert KEY_B not in shown
    assert Settings.from_env({**env, "ARCHIVER_ENCRYPTION_KEY_ID": "none"}).keyring.current is None


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"ARCHIVER_ENCRYPTION_KEYS": f"a:{KEY_A},b:{KEY_B}"}, "ARCHIVER_ENCRYPTION_KEY_ID"),
        ({"ARCHIVER_ENCRYPTION_KEYS": f"a:{KEY_A}", "ARCHIVER_ENCRYPTION_KEY_ID": "z"}, "'z'"),
        ({"ARCHIVER_ENCRYPTION_KEYS": "a:short"}, "ARCHIVER_ENCRYPTION_KEYS"),
        ({"ARCHIVER_ENCRYPTION_KEYS_FILE": "/nonexistent/keys"}, "cannot read"),
        ({"ARCHIVER_MIRROR_URLS": "m=ftp://x"}, "mirror 'm'"),
        ({"ARCHIVER_MIRROR_URLS": "a=file:///m,a=file:///n"}, "twice"),
        ({"ARCHIVER_ACK_POLICY": "all"}, "needs mirrors"),
        ({"ARCHIVER_ACK_POLICY": "some"}, "ARCHIVER_ACK_POLICY"),
        ({"ARCHIVER_SCRUB_BYTES_PER_SECOND": "-1"}, "ARCHIVER_SCRUB_BYTES_PER_SECOND"),
        (
            {"ARCHIVER_SINK_URL": "file:///b", "ARCHIVER_MIRROR_URLS": "file:///b"},
            "primary sink as a mirror",
        ),
    ],
)
def test_bad_encryption_and_mirror_settings_are_refused(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_env(env)


def test_mirrors_are_named_or_numbered() -> None:
    settings = Settings.from_env(
        {"ARCHIVER_MIRROR_URLS": "far=s3://b/p?region=x&endpoint_url=http://h:1,file:///m"}
    )
    assert settings.mirror_urls == {
        "far": "s3://b/p?region=x&endpoint_url=http://h:1",
        "mirror-2": "file:///m",
    }


def test_config_shows_every_setting_with_passwords_masked() -> None:
    env = {"ARCHIVER_REDIS_URL": "redis://user:hunter2@h:6380/0"}
    result = CliRunner().invoke(main, ["config", "--json"], env=env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert list(shown) == [d.env for d in Settings.declared()]
    assert shown["ARCHIVER_REDIS_URL"]["value"] == "redis://user:***@h:6380/0"
    assert shown["ARCHIVER_BROKER_URL"]["value"] == "redis://user:***@h:6380/0"
    assert "hunter2" not in CliRunner().invoke(main, ["config"], env=env).output
    assert "hunter2" not in repr(Settings.from_env(env))
