import pytest

from archiver.core.object_names import (
    archive_key,
    archive_lsn,
    check_storage,
    parse_partition,
    partition_prefix,
)
from archiver.errors import InvalidName


def test_archive_key_matches_the_original_layout() -> None:
    assert archive_key("default", 1, 36) == "default/1/0000000000010.tar"


def test_partition_prefix_keeps_partition_1_apart_from_10() -> None:
    assert partition_prefix("s", 1) == "s/1/"
    assert not archive_key("s", 10, 1).startswith(partition_prefix("s", 1))


@pytest.mark.parametrize(
    "key",
    [
        "s/1/.tmp-0000000000001.tar.abc",
        "s/1/0000000000001.tar.tmp",
        "s/1/notes.txt",
        "s/1/000000000000Z.tar",
        "s/1/0000000000000.tar",
    ],
)
def test_archive_lsn_ignores_anything_but_archives(key: str) -> None:
    assert archive_lsn(key) is None


def test_archive_lsn_reads_archives() -> None:
    assert archive_lsn("s/1/000000000000z.tar") == 35


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a..b", "-x", "x" * 65, "a\nb", "a b", "é"])
def test_unsafe_storage_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidName):
        check_storage(bad)


@pytest.mark.parametrize("bad", ["0", "-1", "1.0", str(2**64), "", "x"])
def test_bad_partition_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidName):
        parse_partition(bad)
