"""`Outage` on its own: after a call that waited for a server that never answered, calls fail at
once for `QUIET_SECONDS`; then one call tries again while the others still fail at once, and an
answer lets all through. A server that refused at once is asked again by the next call. End to end,
across a cut network: tests/reliability/test_network_cut.py."""

from __future__ import annotations

import time

from aibudget.store.outage import QUIET_SECONDS, SLOW_SECONDS, Outage


def test_after_a_long_wait_calls_fail_at_once_then_one_tries_and_its_answer_lets_all_through() -> None:
    outage = Outage()
    assert outage.admit()
    outage.unreached(waited=SLOW_SECONDS + 14)
    assert not outage.admit()
    time.sleep(QUIET_SECONDS)
    assert outage.admit()  # this one tries the server again
    assert not outage.admit()  # the others do not wait for it meanwhile
    outage.reached()
    assert outage.admit()
    assert outage.admit()


def test_a_try_that_waits_in_vain_again_starts_another_quiet_spell() -> None:
    outage = Outage()
    outage.unreached(waited=15)
    time.sleep(QUIET_SECONDS)
    assert outage.admit()
    outage.unreached(waited=15)
    assert not outage.admit()


def test_a_server_that_refuses_at_once_is_asked_again_by_the_next_call() -> None:
    outage = Outage()
    outage.unreached(waited=0.01)
    assert outage.admit()
    assert outage.admit()
