"""The leader's lease table: strict expiry, failover deadlines, rate limits."""

from __future__ import annotations

from raftdir.leader.leases import ExpiryPolicy, LeaseTable


def table(**policy):
    return LeaseTable(ExpiryPolicy(**policy))


def test_a_silent_node_expires_after_ttl_plus_grace_and_not_a_moment_before():
    t = table()
    t.arm_new(7, ttl_secs=30, grace_secs=10, now_mono=100.0, now_wall_ms=0)
    assert t.expired(140.0, workers_total=1, workers_down=0) == []      # exactly ttl+grace
    assert t.expired(140.001, workers_total=1, workers_down=0) == [7]


def test_a_report_moves_the_deadline():
    t = table()
    t.arm_new(7, ttl_secs=30, grace_secs=10, now_mono=100.0, now_wall_ms=0)
    t.renew(7, ttl_secs=20, now_mono=135.0, now_wall_ms=35_000, report=None)
    assert t.time_left(7, 135.0) == 30.0
    assert t.expired(165.0, workers_total=1, workers_down=0) == []
    assert t.expired(165.5, workers_total=1, workers_down=0) == [7]
    assert t.renew(99, ttl_secs=20, now_mono=1, now_wall_ms=1, report=None) is None


def test_failover_deadline_covers_a_live_node_and_is_fixed_for_a_dead_one():
    # interval 5 s, ttl 30, grace 10, skew 2: slack 17 s.
    # k-bound: state clock + 30 + 17; c-bound: checkpoint + 60 + 17.
    t = table(skew_allowance_secs=2)
    t.arm_after_election(7, ttl_secs=30, grace_secs=10, checkpointed_ms=1_000_000,
                         state_clock_ms=1_004_000, now_mono=500.0, now_wall_ms=1_006_000,
                         checkpoint_interval_secs=5, failover_ttl_secs=300)
    assert abs(t.time_left(7, 500.0) - (1_004 + 47 - 1_006)) < 1e-9     # k-bound: 45 s
    # a dead node under a stream of leaders: the state clock keeps moving, the c-bound not
    for clock_ms in (1_100_000, 5_000_000):
        t.arm_after_election(7, ttl_secs=30, grace_secs=10, checkpointed_ms=1_000_000,
                             state_clock_ms=clock_ms, now_mono=500.0, now_wall_ms=clock_ms,
                             checkpoint_interval_secs=5, failover_ttl_secs=300)
        due_wall = 1_000 + 77
        assert abs(t.time_left(7, 500.0) - (due_wall - clock_ms / 1000)) < 1e-9
    # a live node: renewed at r < k + interval, reports by r + ttl: never past the deadline
    k, c = 1_004_000, 1_000_000
    for r in (c, k, k + 4_999):
        if r < c + 35_000:                   # r < c + interval + ttl (the invariant)
            deadline_wall = 17_000 + min(k + 30_000, c + 60_000)
            assert r + 30_000 + 10_000 <= deadline_wall


def test_node_without_checkpoint_gets_the_failover_ttl():
    t = table()
    t.arm_after_election(8, ttl_secs=30, grace_secs=10, checkpointed_ms=0,
                         state_clock_ms=0, now_mono=0.0, now_wall_ms=123, checkpoint_interval_secs=5, failover_ttl_secs=300)
    assert t.time_left(8, 0.0) == 310.0


def test_pending_checkpoint_lists_only_new_renewals():
    t = table()
    t.arm_new(1, ttl_secs=10, grace_secs=10, now_mono=0, now_wall_ms=1000)
    t.arm_new(2, ttl_secs=10, grace_secs=10, now_mono=0, now_wall_ms=1000)
    assert t.pending_checkpoint() == [(1, 1000), (2, 1000)]
    t.checkpointed([(1, 1000), (2, 1000)])
    assert t.pending_checkpoint() == []
    t.renew(2, ttl_secs=10, now_mono=1, now_wall_ms=2000, report=None)
    assert t.pending_checkpoint() == [(2, 2000)]


def test_expiry_is_rate_limited():
    t = table(max_per_second=3)
    for n in range(10):
        t.arm_new(n, ttl_secs=1, grace_secs=0, now_mono=0, now_wall_ms=0)
    first = t.expired(5.0, workers_total=10, workers_down=0)
    assert first == [0, 1, 2]
    for n in first:
        t.forget(n)
    assert t.expired(5.0, workers_total=10, workers_down=3) == []
    assert t.expired(6.0, workers_total=10, workers_down=3) == [3, 4, 5]


def test_a_large_fleet_is_never_evicted_past_the_fraction():
    t = table(max_per_second=1000, max_down_fraction=0.5, large_fleet=50)
    for n in range(100):
        t.arm_new(n, ttl_secs=1, grace_secs=0, now_mono=0, now_wall_ms=0)
    assert len(t.expired(10.0, workers_total=100, workers_down=0)) == 50
    assert t.expired(11.0, workers_total=100, workers_down=50) == []
