"""The supervisor's restart delay: quick deaths back off exponentially up to a cap; a healthy run starts over."""

import pytest

from ops.restarts import RestartBackoff


def test_quick_deaths_double_the_delay_from_half_a_second():
    backoff = RestartBackoff()
    assert [backoff.delay_after(uptime_s=1.0) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_the_delay_never_exceeds_the_cap_however_often_it_dies():
    backoff = RestartBackoff(first_s=0.5, max_s=30.0)
    delays = [backoff.delay_after(uptime_s=0.1) for _ in range(200)]
    assert max(delays) == 30.0
    assert delays[-10:] == [30.0] * 10


def test_a_component_that_ran_long_enough_is_restarted_quickly_again():
    backoff = RestartBackoff(first_s=0.5, healthy_after_s=60.0)
    for _ in range(6):
        backoff.delay_after(uptime_s=2.0)
    assert backoff.delay_after(uptime_s=2.0) == 30.0  # crash-looping: at the cap
    assert backoff.delay_after(uptime_s=60.0) == 0.5
    assert backoff.delay_after(uptime_s=59.9) == 1.0


@pytest.mark.parametrize("uptime", [0.0, 59.999])
def test_a_death_before_the_healthy_threshold_keeps_backing_off(uptime: float):
    backoff = RestartBackoff(first_s=1.0, healthy_after_s=60.0)
    backoff.delay_after(uptime)
    assert backoff.delay_after(uptime) == 2.0
