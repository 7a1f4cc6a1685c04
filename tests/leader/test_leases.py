"""The leader's lease table: strict expiry, failover deadlines, rate limits."""

from __future__ import annotations

from raftdir.leader.leases import ExpiryPolicy, LeaseTable


def table(**policy):
    return LeaseTable(ExpiryPolicy(**policy))


def test_a_silent_node_expires_after_ttl_plus_grace_and_not_a_moment_before():
    t = table()
    t.arm_new(7, ttl_secs=30, grace_secs=10, now=100.0, now_wall_ms=0)
    assert t.expired(140.0, workers_total=1, workers_down=0) == []      # exactly ttl+grace
    assert t.expired(140.001, workers_total=1, workers_down=0) == [7]


def test_a_report_moves_the_deadline():
    t = table()
    t.arm_new(7, ttl_secs=30, grace_secs=10, now=100.0, now_wall_ms=0)
    t.renew(7, ttl_secs=20, now=135.0, now_wall_ms=35_000, report=None)
    assert t.time_left(7, 135.0) == 30.0
    assert t.expired(165.0, workers_total=1, workers_down=0) == []
    assert t.expired(165.5, workers_total=1, workers_down=0) == [7]
    assert t.renew(99, ttl_secs=20, now=1, now_wall_ms=1, report=None) is None


def test_a_worker_gets_its_longest_ttl_plus_grace_from_the_takeover():
    t = table()
    t.arm_on_takeover(7, ttl_secs=30, grace_secs=10, checkpointed_ms=1_000_000, now=500.0)
    assert t.time_left(7, 500.0) == 40.0
    assert t.expired(540.0, workers_total=1, workers_down=0) == []
    assert t.expired(540.001, workers_total=1, workers_down=0) == [7]
    assert t.pending_checkpoint() == []    # the checkpointed renewal is kept as is


def test_pending_checkpoint_lists_only_new_renewals():
    t = table()
    t.arm_new(1, ttl_secs=10, grace_secs=10, now=0, now_wall_ms=1000)
    t.arm_new(2, ttl_secs=10, grace_secs=10, now=0, now_wall_ms=1000)
    assert t.pending_checkpoint() == [(1, 1000), (2, 1000)]
    t.checkpointed([(1, 1000), (2, 1000)])
    assert t.pending_checkpoint() == []
    t.renew(2, ttl_secs=10, now=1, now_wall_ms=2000, report=None)
    assert t.pending_checkpoint() == [(2, 2000)]


def test_expiry_is_rate_limited():
    t = table(max_per_second=3)
    for n in range(10):
        t.arm_new(n, ttl_secs=1, grace_secs=0, now=0, now_wall_ms=0)
    first = t.expired(5.0, workers_total=10, workers_down=0)
    assert first == [0, 1, 2]
    for n in first:
        t.forget(n)
    assert t.expired(5.0, workers_total=10, workers_down=3) == []
    assert t.expired(6.0, workers_total=10, workers_down=3) == [3, 4, 5]


def test_a_large_fleet_is_never_evicted_past_the_fraction():
    t = table(max_per_second=1000, max_down_fraction=0.5, large_fleet=50)
    for n in range(100):
        t.arm_new(n, ttl_secs=1, grace_secs=0, now=0, now_wall_ms=0)
    assert len(t.expired(10.0, workers_total=100, workers_down=0)) == 50
    assert t.expired(11.0, workers_total=100, workers_down=50) == []
