"""Throttled: /metrics and /v1/stats rendered at a bounded rate (a token
bucket per worker), on a clock the test moves."""

from kv.http.throttle import RENDER_BURST, RENDER_SECONDS, Throttled


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def throttled():
    clock = Clock()
    made = []

    def render():
        made.append(clock.now)
        return len(made)  # stands for the response: which rendering it is

    return Throttled(render, clock=clock), clock, made


def test_a_burst_of_calls_each_gets_a_fresh_rendering():
    page, _, made = throttled()
    assert [page.get() for _ in range(RENDER_BURST)] == list(range(1, RENDER_BURST + 1))


def test_past_the_burst_the_last_rendering_is_served_again():
    page, clock, made = throttled()
    for _ in range(RENDER_BURST):
        page.get()
    clock.now += RENDER_SECONDS / 10
    assert [page.get() for _ in range(50)] == [RENDER_BURST] * 50
    assert len(made) == RENDER_BURST


def test_a_flood_gets_one_rendering_per_window_and_none_older_than_it():
    page, clock, made = throttled()
    step = RENDER_SECONDS / 100
    for _ in range(3000):  # 30 windows of calls every 1/100 of a window
        page.get()
        assert clock.now - made[-1] < RENDER_SECONDS  # the served rendering's age
        clock.now += step
    assert len(made) <= RENDER_BURST + 30 + 1


def test_a_quiet_window_earns_a_fresh_rendering_and_a_long_quiet_the_whole_burst():
    page, clock, made = throttled()
    for _ in range(RENDER_BURST + 5):
        page.get()
    clock.now += RENDER_SECONDS
    assert page.get() == RENDER_BURST + 1
    clock.now += 100 * RENDER_SECONDS
    assert len({page.get() for _ in range(RENDER_BURST + 5)}) == RENDER_BURST
