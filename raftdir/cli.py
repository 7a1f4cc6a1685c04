"""The ``raftdir`` command line: a thin click layer over the library.

Owns: argument parsing, output formatting and exit codes (0 ok, 1 the operation failed,
2 usage or configuration error). Runs in the caller's main thread. Nothing here holds
logic the library lacks; every command calls the embedding API or the client.
"""

from __future__ import annotations

import sys

import click

from . import __version__
from .codec import dumps_json, to_dict
from .config import dump_yaml, load_with_warnings
from .errors import ConfigError

__all__ = ["main", "cli"]

EXIT_FAILED = 1
EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="raftdir")
def cli() -> None:
    """raftdir: a Raft-replicated cluster membership directory (worker leases, profiles
    and assignment revisions)."""


@cli.group()
def config() -> None:
    """Inspect cluster-mode configuration files."""


@config.command("check")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True,
              help="Print each file as one JSON document (one line per file).")
def config_check(files: tuple[str, ...], as_json: bool) -> None:
    """Validate cluster_mode files and print them normalised.

    Each FILE is read by its extension (.yaml, .yml or .json). A missing file means
    single-node, as it does for the daemon. On the first invalid file the error is printed
    to stderr as FILE: path: problem, and the exit status is 2.
    """
    for i, path in enumerate(files):
        try:
            mode, warnings = load_with_warnings(path)
        except ConfigError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(EXIT_USAGE)
        for warning in warnings:
            click.echo(f"warning: {path}: {warning}", err=True)
        if as_json:
            click.echo(dumps_json(to_dict(mode)).decode("utf-8"))
        else:
            if len(files) > 1:
                click.echo(("---\n" if i else "") + f"# {path}")
            click.echo(dump_yaml(mode), nl=False)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="raftdir")


if __name__ == "__main__":  # pragma: no cover
    main()
