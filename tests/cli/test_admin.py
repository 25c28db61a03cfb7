"""Operators' changes (``archiver admin``): atomic, refused when they do not apply, audited.
Run against a real Redis; the CLI in-process."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from archiver.cli import main
from archiver.core.object_names import PartitionId
from archiver.core.partition import PartitionCondition
from archiver.store.state_store import RedisStateStore
from tests.store_calls import apply_notification, claim_next_entry

HOUR = 3600.0


@pytest.fixture
def run(redis_url: str) -> Any:
    # The broker is the same Redis: requeue sends its task there.
    env = {"ARCHIVER_REDIS_URL": redis_url, "ARCHIVER_ACTOR": "alice@ops"}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


def detail(run: Any, partition: int = 1) -> dict[str, Any]:
    result = run("inspect", "partition", "default", str(partition), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


def test_pause_stops_claims_and_resume_restarts_them(run: Any, store: RedisStateStore) -> None:
    claim = apply_notification(store, "default", 1, 1, 5, HOUR).claim
    assert claim is not None
    result = run("admin", "pause", "default", "1", "--reason", "disk check")
    assert result.exit_code == 0, result.output
    # The entry in flight finishes, and nothing more is claimed.
    commit = store.transitions.commit_success(
        PartitionId("default", 1), claim.lsn, claim.token, HOUR
    )
    assert commit.committed
    assert commit.next_claim is None
    assert claim_next_entry(store, "default", 1, HOUR) is None
    assert detail(run)["state"] == PartitionCondition.PAUSED.value

    again = run("admin", "pause", "default", "1")
    assert again.exit_code == 1
    assert "refused for default/1: already paused" in again.output

    assert run("admin", "resume", "default", "1").exit_code == 0
    assert claim_next_entry(store, "default", 1, HOUR) is not None
    assert "not paused" in run("admin", "resume", "default", "1").output

    audit = detail(run)["audit"]
    assert [(a["action"], a["actor"], a["reason"]) for a in audit] == [
        ("pause", "alice@ops", "disk check"),
        ("resume", "alice@ops", ""),
    ]
    assert all(int(a["at_ms"]) > 0 for a in audit)


def test_release_fences_the_holder_off(run: Any, store: RedisStateStore) -> None:
    claim = apply_notification(store, "default", 1, 1, 5, HOUR).claim
    assert claim is not None
    store.transitions.start_attempt(
        PartitionId("default", 1), claim.lsn, claim.token, HOUR, "host-a:42"
    )
    assert detail(run)["lease_holder"] == "host-a:42"

    result = run("admin", "release", "default", "1", "--reason", "host-a is dead")
    assert result.exit_code == 0, result.output
    assert "LSN 1 in flight" in result.output
    # The old holder can neither renew, nor commit (so never acknowledge).
    assert not store.transitions.renew_lease(
        PartitionId("default", 1), claim.lsn, claim.token, HOUR
    )
    assert not store.transitions.commit_success(
        PartitionId("default", 1), claim.lsn, claim.token, HOUR
    ).committed
    after = detail(run)
    assert after["in_flight_lsn"] is None
    assert after["lease_holder"] is None
    assert after["fencing_token"] > claim.token
    assert after["audit"][-1]["detail"] == {"lsn": "1", "fenced_token": str(claim.token)}
    # The entry is granted again, with a newer token.
    regrant = claim_next_entry(store, "default", 1, HOUR)
    assert regrant is not None
    assert regrant.lsn == 1
    assert regrant.token > after["fencing_token"]

    nothing = run("admin", "release", "default", "2")
    assert nothing.exit_code == 1
    assert "no state for this partition" in nothing.output


def test_release_refuses_when_nothing_is_in_flight(run: Any, store: RedisStateStore) -> None:
    claim = apply_notification(store, "default", 1, 1, 1, HOUR).claim
    assert claim is not None
    store.transitions.commit_success(PartitionId("default", 1), claim.lsn, claim.token, HOUR)
    result = run("admin", "release", "default", "1")
    assert result.exit_code == 1
    assert "nothing is in flight" in result.output
    assert detail(run)["audit"] == []


def test_skip_to_records_a_manual_gap_and_needs_reason_and_yes(
    run: Any, store: RedisStateStore
) -> None:
    claim = apply_notification(store, "default", 1, 1, 10, HOUR).claim
    assert claim is not None
    missing_reason = run("admin", "skip-to", "default", "1", "4", "--yes")
    assert missing_reason.exit_code == 2
    assert "--reason" in missing_reason.output
    unconfirmed = run("admin", "skip-to", "default", "1", "4", "--reason", "disk lost")
    assert unconfirmed.exit_code == 2
    assert "gives up entries 1..3" in unconfirmed.output
    assert detail(run)["next_lsn"] == 1

    for lsn, why in (("1", "is not above the next LSN"), ("12", "beyond the newest announced")):
        refused = run("admin", "skip-to", "default", "1", lsn, "--reason", "x", "--yes")
        assert refused.exit_code == 1
        assert why in refused.output

    done = run("admin", "skip-to", "default", "1", "4", "--reason", "disk lost", "--yes")
    assert done.exit_code == 0, done.output
    after = detail(run)
    assert after["next_lsn"] == 4
    assert after["acknowledged_lsn"] is None  # nothing skipped is acknowledged
    assert after["gaps_total"] == 1
    assert [(g["expected"], g["actual"], g["manual"]) for g in after["gaps"]] == [(1, 4, True)]
    assert after["audit"][-1]["action"] == "skip-to"
    assert after["audit"][-1]["reason"] == "disk lost"
    # The holder of LSN 1 is fenced off.
    assert not store.transitions.commit_success(
        PartitionId("default", 1), claim.lsn, claim.token, HOUR
    ).committed
    # Up to the high-water mark + 1 is allowed: everything announced is given up.
    assert run("admin", "skip-to", "default", "1", "11", "--reason", "x", "--yes").exit_code == 0
    assert detail(run)["state"] == PartitionCondition.IDLE.value


def test_requeue_clears_a_conflict_and_sends_the_entry(
    run: Any, store: RedisStateStore, redis_url: str
) -> None:
    claim = apply_notification(store, "default", 1, 1, 3, HOUR).claim
    assert claim is not None
    assert store.transitions.mark_conflict(
        PartitionId("default", 1), claim.lsn, claim.token, "ArchiveConflict: x"
    )
    assert claim_next_entry(store, "default", 1, HOUR) is None
    assert detail(run)["state"] == PartitionCondition.CONFLICTED.value

    result = run("admin", "requeue", "default", "1", "--reason", "moved the object aside")
    assert result.exit_code == 0, result.output
    after = detail(run)
    assert after["state"] == PartitionCondition.IN_FLIGHT.value
    assert after["conflicted"] is False
    assert after["last_error"] is None
    assert after["in_flight_lsn"] == 1
    assert after["audit"][-1]["detail"]["was_conflicted"] is True
    # The task went to the storage's queue on the broker (the same Redis here).
    message = json.loads(store.client.lindex("archiver.default", 0))
    assert message["headers"]["task"] == "archiver.archive_entry"
    args = json.loads(base64.b64decode(message["body"]))[0]
    assert args == ["default", 1, 1, after["fencing_token"]]


def test_requeue_refuses_a_paused_or_idle_partition(run: Any, store: RedisStateStore) -> None:
    claim = apply_notification(store, "default", 1, 1, 1, HOUR).claim
    assert claim is not None
    store.transitions.commit_success(PartitionId("default", 1), claim.lsn, claim.token, HOUR)
    idle = run("admin", "requeue", "default", "1")
    assert idle.exit_code == 1
    assert "nothing to archive" in idle.output
    apply_notification(store, "default", 1, 1, 2, HOUR)
    run("admin", "pause", "default", "1")
    paused = run("admin", "requeue", "default", "1")
    assert paused.exit_code == 1
    assert "resume it first" in paused.output


def test_admin_commands_reject_bad_arguments_clearly(run: Any) -> None:
    for args in (
        ("admin", "pause", "no/slash", "1"),
        ("admin", "pause", "default", "-3"),
        ("admin", "skip-to", "default", "1", "zero", "--reason", "x", "--yes"),
    ):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
