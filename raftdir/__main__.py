"""``python -m raftdir``: the same as the ``raftdir`` command."""
from .cli import main

main()
