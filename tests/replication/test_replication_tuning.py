"""RaftTuning: defaults of pysyncobj.md §5.1 and validation that names the field."""

from __future__ import annotations

import pytest

from raftdir.errors import ConfigError
from raftdir.replication import RaftTuning


def test_defaults_are_the_pinned_configuration():
    t = RaftTuning()
    assert (t.raft_min_timeout, t.raft_max_timeout, t.append_entries_period) == (0.2, 0.6, 0.05)
    assert (t.auto_tick_period, t.connection_retry_time, t.leader_fallback_timeout) == (
        0.02, 1.0, 2.0)
    assert t.connection_timeout >= t.raft_max_timeout


def test_pinned_defaults_reach_syncobjconf(tmp_path):
    from raftdir.replication.pysyncobj_node import build_conf

    conf = build_conf("127.0.0.1:4321", str(tmp_path), RaftTuning(), password="p",
                      serializer=lambda f, d: None, deserializer=lambda f: None,
                      on_state_changed=None)
    assert conf.bindAddress == "127.0.0.1:4321" and conf.password == "p"
    assert conf.appendEntriesUseBatch is False and conf.commandsWaitLeader is False
    assert conf.dynamicMembershipChange is True
    assert conf.journalFile.endswith("raft.journal") and conf.fullDumpFile.endswith("raft.dump")
    assert conf.maxBindRetries == 10 and conf.leaderFallbackTimeout == 2.0


@pytest.mark.parametrize("kwargs,field,rule", [
    ({"raft_min_timeout": 0.15}, "raft_min_timeout", "3 \\* append_entries_period"),
    ({"raft_max_timeout": 0.2}, "raft_max_timeout", "> raft_min_timeout"),
    ({"connection_timeout": 0.5}, "connection_timeout", ">= raft_max_timeout"),
    ({"leader_fallback_timeout": 0.05}, "leader_fallback_timeout", "> append_entries_period"),
    ({"auto_tick_period": 0.1}, "auto_tick_period", "<= append_entries_period"),
    ({"append_entries_period": 0}, "append_entries_period", "> 0"),
    ({"log_compaction_min_entries": 1}, "log_compaction_min_entries", ">= 2"),
    ({"max_bind_retries": 0}, "max_bind_retries", ">= 1"),
    ({"connection_retry_time": -1}, "connection_retry_time", ">= 0"),
    ({"log_compaction_min_entries": 2.5}, "log_compaction_min_entries", "integer"),
    ({"raft_min_timeout": "0.3"}, "raft_min_timeout", "number"),
    ({"auto_tick_period": True}, "auto_tick_period", "number"),
])
def test_invalid_values_name_field_value_and_rule(kwargs, field, rule):
    with pytest.raises(ConfigError, match=rule) as info:
        RaftTuning(**kwargs)
    assert info.value.field == f"raft.{field}"
    assert str(info.value).startswith(f"raft.{field}: {next(iter(kwargs.values()))!r}")


def test_from_dict_refuses_unknown_keys():
    assert RaftTuning.from_dict({"raft_min_timeout": 0.4}).raft_min_timeout == 0.4
    with pytest.raises(ConfigError, match="raft.raft_min_timout: unknown key") as info:
        RaftTuning.from_dict({"raft_min_timout": 0.4})
    assert info.value.field == "raft.raft_min_timout"
    with pytest.raises(ConfigError):
        RaftTuning.from_dict([1])


@pytest.mark.parametrize("minimum", [0.2, 1.5, 60.0])
def test_with_election_timeout_keeps_heartbeats_frequent_and_the_rules(minimum):
    t = RaftTuning.with_election_timeout(minimum)  # validated on construction
    assert (t.raft_min_timeout, t.raft_max_timeout) == (minimum, 3 * minimum)
    assert t.append_entries_period == min(0.05, minimum / 4)
    assert t.auto_tick_period <= t.append_entries_period
    assert t.connection_timeout >= t.raft_max_timeout
    assert t.journal_sync is True


def test_with_election_timeout_refuses_what_no_heartbeat_period_fits():
    with pytest.raises(ConfigError) as err:
        RaftTuning.with_election_timeout(0)
    assert err.value.field.startswith("raft.")
