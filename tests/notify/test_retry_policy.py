"""When a failed send is tried again: the schedule (Svix's by default), the exponential backoff, Retry-After."""

from __future__ import annotations

import email.utils
import time

import pytest

from gateway.config.notifications import DEFAULT_SCHEDULE, RetrySettings
from gateway.exceptions import ConfigError
from gateway.notify.worker import MAX_RETRY_AFTER_S, retry_delay
from gateway.settings import parse_settings
from plugins.webhook import retry_after


def test_the_default_is_a_schedule_that_lasts_a_day() -> None:
    retries = RetrySettings()
    assert retries.schedule == DEFAULT_SCHEDULE and retries.attempts == 8
    assert sum(DEFAULT_SCHEDULE) > 24 * 3600  # a receiver down for hours still gets its messages


def test_an_exponential_backoff_is_still_there_when_asked_for() -> None:
    retries = RetrySettings(max_attempts=4, base_delay=0.1)
    assert retries.schedule is None and retries.attempts == 4
    assert 0 <= retry_delay(retries, 3, rng=lambda: 0.999) <= 0.4


def test_schedule_and_backoff_are_exclusive() -> None:
    text = "notifications:\n  channels: {log: {plugin: log}}\n  retries: {schedule: [1s], max_attempts: 3}\n"
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, source="gw.yaml", environ={})
    assert "give either schedule or max_attempts" in "\n".join(caught.value.errors)


@pytest.mark.parametrize("attempt", [1, 2, 7, 9])
def test_each_retry_waits_its_entry_jittered_by_ten_percent(attempt: int) -> None:
    retries = RetrySettings(schedule=(5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0))
    entry = retries.schedule[min(attempt, 7) - 1]  # type: ignore[index]
    low, high = retry_delay(retries, attempt, rng=lambda: 0.0), retry_delay(retries, attempt, rng=lambda: 1.0)
    assert low == pytest.approx(entry * 0.9) and high == pytest.approx(entry * 1.1)


def test_retry_after_is_a_floor_capped_at_a_day() -> None:
    retries = RetrySettings(schedule=(5.0,))
    assert retry_delay(retries, 1, retry_after=120.0, rng=lambda: 0.5) == 120.0
    assert retry_delay(retries, 1, retry_after=1.0, rng=lambda: 0.5) == pytest.approx(5.0)
    assert retry_delay(retries, 1, retry_after=10 * MAX_RETRY_AFTER_S, rng=lambda: 0.5) == MAX_RETRY_AFTER_S


def test_the_webhook_reads_both_forms_of_retry_after() -> None:
    assert retry_after("120") == 120.0
    later = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= (retry_after(later) or 0) <= 61
    assert retry_after("soon") is None and retry_after(None) is None and retry_after("-5") is None
