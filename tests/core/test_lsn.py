import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiver.core.lsn import MAX_LSN, format_lsn, parse_decimal_lsn, parse_lsn
from archiver.errors import InvalidLSN


@pytest.mark.parametrize(
    ("lsn", "name"),
    [
        (1, "0000000000001"),
        (35, "000000000000z"),
        (36, "0000000000010"),
        (MAX_LSN, "3w5e11264sgsf"),
    ],
)
def test_lsn_names_match_the_original_format(lsn: int, name: str) -> None:
    assert format_lsn(lsn) == name
    assert parse_lsn(name) == lsn


@given(st.integers(min_value=1, max_value=MAX_LSN))
def test_names_round_trip_and_sort_in_lsn_order(lsn: int) -> None:
    name = format_lsn(lsn)
    assert len(name) == 13
    assert parse_lsn(name) == lsn
    if lsn < MAX_LSN:
        assert format_lsn(lsn) < format_lsn(lsn + 1)


@pytest.mark.parametrize("bad", [0, -1, MAX_LSN + 1])
def test_out_of_range_lsns_are_refused(bad: int) -> None:
    with pytest.raises(InvalidLSN):
        format_lsn(bad)


@pytest.mark.parametrize(
    "bad", ["", "1", "000000000000Z", "00000000000001", "0000000000000", "3w5e11264sgsg", "../x"]
)
def test_non_canonical_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidLSN):
        parse_lsn(bad)


@pytest.mark.parametrize("bad", ["", "0", "-5", "1.5", "0x10", "١٢", str(2**64), "12a"])
def test_decimal_lsns_are_checked(bad: str) -> None:
    with pytest.raises(InvalidLSN):
        parse_decimal_lsn(bad)


def test_decimal_lsn_accepts_the_full_range() -> None:
    assert parse_decimal_lsn("1") == 1
    assert parse_decimal_lsn(str(MAX_LSN)) == MAX_LSN
