"""The system tests' acknowledgement watcher cannot pass by falling silent."""

from __future__ import annotations

import pytest

from archiver.sinks import FilesystemSink
from tests.support import System


def test_the_watcher_checks_an_acknowledgement_published_just_before_the_check(
    system: System,
) -> None:
    system.streams.publish_ack(system.storage, 1, 1)  # nothing archived
    with pytest.raises(AssertionError, match="ack 1 came before its archive"):
        system.watcher.check()
    system.watcher.violations.clear()


class BrokenSink(FilesystemSink):
    def exists(self, key: str) -> bool:
        raise RuntimeError("a bug in the check itself")


def test_a_watcher_that_died_fails_the_test_with_its_traceback(system: System) -> None:
    system.sink = BrokenSink(system.tmp / "bucket")
    system.streams.publish_ack(system.storage, 1, 1)
    with pytest.raises(AssertionError, match=r"(?s)the ack watcher died.*a bug in the check"):
        system.watcher.check()
    with pytest.raises(AssertionError, match="the ack watcher died"):
        system.close()
    system.watcher.failure = None  # for the fixture's own close
