import pytest

from cred.throttle import Throttle


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_delay_grows_exponentially_with_failures_up_to_the_cap(clock):
    throttle = Throttle(base_delay=0.25, factor=2, max_delay=30, clock=clock)
    delays = []
    for _ in range(10):
        delays.append(throttle.delay_for("alice", "10.0.0.1"))
        throttle.failure("alice", "10.0.0.1")
    assert delays == [0, 0.25, 0.5, 1, 2, 4, 8, 16, 30, 30]


def test_another_account_from_another_source_is_not_delayed(clock):
    throttle = Throttle(clock=clock)
    for _ in range(8):
        throttle.failure("alice", "10.0.0.1")
    assert throttle.delay_for("alice", "10.0.0.1") > 0
    assert throttle.delay_for("alice", "10.0.0.2") > 0  # per account
    assert throttle.delay_for("bob", "10.0.0.1") > 0  # per source
    assert throttle.delay_for("bob", "10.0.0.2") == 0


def test_delay_counts_down_from_the_last_failure(clock):
    throttle = Throttle(base_delay=1, factor=2, clock=clock)
    for _ in range(3):
        throttle.failure("alice")
    assert throttle.delay_for("alice") == 4
    clock.now += 3
    assert throttle.delay_for("alice") == 1
    clock.now += 5
    assert throttle.delay_for("alice") == 0
    throttle.failure("alice")  # the count is remembered until expiry
    assert throttle.delay_for("alice") == 8


def test_free_failures_are_not_delayed(clock):
    throttle = Throttle(base_delay=1, free_failures=2, clock=clock)
    throttle.failure("alice")
    throttle.failure("alice")
    assert throttle.delay_for("alice") == 0
    throttle.failure("alice")
    assert throttle.delay_for("alice") == 1


def test_success_clears_the_account_but_not_the_source(clock):
    throttle = Throttle(clock=clock)
    for _ in range(5):
        throttle.failure("alice", "10.0.0.1")
    throttle.success("alice", "10.0.0.1")
    assert throttle.delay_for("alice", "10.0.0.9") == 0
    assert throttle.delay_for("carol", "10.0.0.1") > 0


def test_unknown_names_are_throttled_like_known_ones(clock):
    throttle = Throttle(clock=clock)
    for name in ("alice", "no-such-user"):
        for _ in range(4):
            throttle.failure(name)
    assert throttle.delay_for("alice") == throttle.delay_for("no-such-user") > 0


def test_entries_expire(clock):
    throttle = Throttle(expire_after=60, clock=clock)
    for _ in range(5):
        throttle.failure("alice", "10.0.0.1")
    clock.now += 61
    assert throttle.delay_for("alice", "10.0.0.1") == 0
    assert len(throttle) == 0
    throttle.failure("alice")
    assert throttle.delay_for("alice") == 0.25  # counting starts again


def test_table_size_is_bounded_and_a_busy_source_is_kept(clock):
    throttle = Throttle(max_entries=100, clock=clock)
    for i in range(10_000):
        clock.now += 0.001
        throttle.failure(f"user{i}", "10.6.6.6")
    assert len(throttle) <= 100
    # the attacking source failed most recently, so it is still remembered
    assert throttle.delay_for("someone-new", "10.6.6.6") == 30


def test_no_account_and_no_source_means_no_delay(clock):
    throttle = Throttle(clock=clock)
    throttle.failure(None, None)
    assert throttle.delay_for(None, None) == 0
    assert len(throttle) == 0


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        Throttle(factor=0.5)
    with pytest.raises(ValueError):
        Throttle(max_entries=0)


def sequential_starts(throttle, clock, attempts, account, source):
    starts = []
    for _ in range(attempts):
        clock.now += throttle.delay_for(account, source)
        starts.append(clock.now)
        throttle.failure(account, source)
    return starts


def test_attempts_in_flight_wait_as_the_same_number_of_sequential_failures_would(clock):
    throttle = Throttle(base_delay=0.25, factor=2, max_delay=30, clock=clock)
    expected = sequential_starts(Throttle(clock=clock), clock, 12, "alice", "10.0.0.1")
    expected = [t - expected[0] for t in expected]
    # Twelve at once, none of them finished: each start is reserved as if
    # all the earlier ones had already failed.
    begin = clock.now
    attempts, starts = [], []
    for _ in range(12):
        clock.now += throttle.delay_for("alice", "10.0.0.1")
        assert throttle.delay_for("alice", "10.0.0.1") == 0
        attempts.append(throttle.start("alice", "10.0.0.1"))
        starts.append(clock.now)
    assert [t - begin for t in starts] == expected
    assert expected[:8] == [0, 0.25, 0.75, 1.75, 3.75, 7.75, 15.75, 31.75]
    for attempt in attempts:
        attempt.failure()
    assert throttle.delay_for("alice", "10.0.0.1") == 30  # as after 12 sequential failures


def test_concurrency_buys_nothing_across_accounts_from_one_source(clock):
    # Guessing at a different account each time: the source's key holds it.
    throttle = Throttle(base_delay=1, factor=2, max_delay=8, clock=clock)
    waits = []
    for i in range(6):
        waits.append(throttle.delay_for(f"user{i}", "10.6.6.6"))
        throttle.start(f"user{i}", "10.6.6.6")  # none ends yet
    assert waits == [0, 1, 2, 4, 8, 8]


def test_a_success_takes_its_reservation_back_from_the_source(clock):
    throttle = Throttle(base_delay=1, factor=2, clock=clock)
    first = throttle.start("alice", "10.0.0.1")
    assert throttle.delay_for("bob", "10.0.0.1") == 1  # alice's login might be a guess
    first.success()
    assert throttle.delay_for("bob", "10.0.0.1") == 0  # it was not
    assert len(throttle) == 0
    # ... but a success does not launder the source's failures
    throttle.start("carol", "10.0.0.1").failure()
    throttle.start("alice", "10.0.0.1").success()
    assert throttle.delay_for("bob", "10.0.0.1") == 1


def test_released_attempts_count_for_nothing(clock):
    throttle = Throttle(clock=clock)
    attempt = throttle.start("alice", "10.0.0.1")
    attempt.release()
    attempt.failure()  # only the first outcome counts
    assert throttle.delay_for("alice", "10.0.0.1") == 0
    assert len(throttle) == 0


def test_free_failures_let_as_many_attempts_run_at_once_as_run_in_a_row(clock):
    throttle = Throttle(base_delay=1, free_failures=3, clock=clock)
    waits = []
    for _ in range(6):
        waits.append(throttle.delay_for("alice"))
        throttle.start("alice")
    assert waits == [0, 0, 0, 0, 1, 2]


def test_an_attempt_that_never_ends_is_forgotten_after_expire_after(clock):
    throttle = Throttle(base_delay=1, expire_after=60, clock=clock)
    throttle.start("alice", "10.0.0.1")
    throttle.start("alice", "10.0.0.1")
    assert throttle.delay_for("alice", "10.0.0.1") > 0
    clock.now += 61
    assert throttle.delay_for("alice", "10.0.0.1") == 0
    assert len(throttle) == 0


def test_overlapping_logins_that_succeed_wait_one_base_delay_apart_not_more(clock):
    # A NAT: eight users log in, each asking while the previous one is in
    # flight.  The waits do not grow, since every one of them succeeds.
    throttle = Throttle(base_delay=0.25, factor=2, clock=clock)
    waits = []
    attempt = throttle.start("user0", "192.0.2.1")
    for i in range(1, 8):
        waits.append(throttle.delay_for(f"user{i}", "192.0.2.1"))
        clock.now += waits[-1]
        attempt.success()
        attempt = throttle.start(f"user{i}", "192.0.2.1")
    attempt.success()
    assert waits == [0.25] * 7
    assert throttle.delay_for("user9", "192.0.2.1") == 0
