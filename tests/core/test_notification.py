import pytest

from archiver.core.notification import Notification, parse_notification
from archiver.errors import InvalidNotification

GOOD = {"storage": "default", "partition": "7", "low": "3", "high": "9"}


def test_a_good_notification_parses_from_str_or_bytes() -> None:
    expected = Notification("default", 7, 3, 9)
    assert parse_notification(GOOD) == expected
    as_bytes = {k.encode(): v.encode() for k, v in GOOD.items()}
    assert parse_notification(as_bytes) == expected


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"storage": None}, "missing field"),
        ({"low": "x"}, "decimal"),
        ({"low": "-1"}, "decimal"),
        ({"low": "0"}, "between"),
        ({"high": str(2**64)}, "between"),
        ({"low": "10"}, "above high"),
        ({"storage": "../etc"}, "storage name"),
        ({"storage": ""}, "non-empty"),
        ({"partition": "0"}, "partition"),
        ({"storage": "x" * 300}, "longer than"),
    ],
)
def test_bad_notifications_are_rejected_with_a_reason(
    change: dict[str, str | None], reason: str
) -> None:
    raw = {**GOOD, **change}
    fields = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(InvalidNotification, match=reason):
        parse_notification(fields)


def test_unknown_storage_is_rejected_when_storages_are_known() -> None:
    with pytest.raises(InvalidNotification, match="unknown storage"):
        parse_notification(GOOD, known_storages=frozenset({"other"}))
    assert parse_notification(GOOD, known_storages=frozenset({"default"})).storage == "default"
