"""Log sequence numbers and their on-disk spelling.

In names (WAL directories, archive objects) an LSN is base 36, lowercase, zero-padded to 13
characters: the width of 2**64 - 1, so names sort in LSN order. Everywhere else it is a decimal
integer.
"""

from __future__ import annotations

import string

from archiver.errors import InvalidLSN

LSN_WIDTH = 13
MIN_LSN = 1
MAX_LSN = 2**64 - 1
_DIGITS = string.digits + string.ascii_lowercase


def check_lsn(lsn: int) -> int:
    """Return ``lsn`` if it is a valid LSN (1 .. 2**64-1), else raise."""
    if isinstance(lsn, bool) or not isinstance(lsn, int):
        raise InvalidLSN(f"LSN must be an integer, got {lsn!r}")
    if not MIN_LSN <= lsn <= MAX_LSN:
        raise InvalidLSN(f"LSN must be between {MIN_LSN} and 2**64-1, got {lsn}")
    return lsn


def format_lsn(lsn: int) -> str:
    """Spell ``lsn`` as it appears in names: ``1`` becomes ``0000000000001``."""
    check_lsn(lsn)
    digits = []
    while lsn:
        lsn, rest = divmod(lsn, 36)
        digits.append(_DIGITS[rest])
    return "".join(reversed(digits)).rjust(LSN_WIDTH, "0")


def parse_lsn(name: str) -> int:
    """Read an LSN spelled as in names; anything but the canonical spelling is refused."""
    if len(name) != LSN_WIDTH or any(c not in _DIGITS for c in name):
        raise InvalidLSN(f"not a {LSN_WIDTH}-character lowercase base-36 LSN: {name!r}")
    return check_lsn(int(name, 36))


def parse_decimal_lsn(text: str) -> int:
    """Read an LSN written in decimal, as in CLI arguments, JSON and Redis fields."""
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        raise InvalidLSN(f"LSN must be a positive decimal integer, got {text!r}")
    return check_lsn(int(text))
