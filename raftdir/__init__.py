"""raftdir: a Raft-replicated cluster membership directory."""
__version__ = "0.1.0"
