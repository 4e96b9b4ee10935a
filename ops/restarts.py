"""When the supervisor starts a component again after it died.

Why a growing delay: a component that dies at once on start (a port taken, Redis refusing its AOF) would otherwise
be restarted in a tight loop, flooding the terminal and the machine. Why the reset: a component that ran fine for a
while and then crashed once deserves a quick restart, not the long delay its earlier crash loop earned.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RestartBackoff:
    """Exponential restart delay: `first_s`, doubled on each quick death, capped at `max_s`.

    A component that stayed up at least `healthy_after_s` before dying starts over at `first_s`.
    """

    first_s: float = 0.5
    max_s: float = 30.0
    healthy_after_s: float = 60.0
    #: deaths in a row without a healthy run in between
    quick_deaths: int = 0

    def delay_after(self, uptime_s: float) -> float:
        """The delay before the next start of a component that died after running `uptime_s` seconds."""
        if uptime_s >= self.healthy_after_s:
            self.quick_deaths = 0
        delay = min(self.max_s, self.first_s * 2 ** min(self.quick_deaths, 32))
        self.quick_deaths += 1
        return delay
