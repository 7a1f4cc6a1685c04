"""The ``raftdir`` command line: a thin click layer over the library.

Owns: argument parsing, output formatting (one table renderer, ``render_table``, used by
every listing; ``--json`` everywhere a listing is printed) and exit codes: 0 ok, 1 the
operation failed (the message names the peer and the reason), 2 usage or configuration
error. Runs in the caller's main thread; network commands run one ``asyncio.run`` each.
Nothing here holds logic the library lacks: ``serve`` and ``worker`` run
``raftdir.daemon.Daemon``, the other commands call ``raftdir.api.client.RaftdirClient``,
``secret`` and ``token admin`` call ``raftdir.replication.secret`` and ``raftdir.auth``.

Where the commands find things: the servers from ``--server`` (repeatable or
comma-separated) or ``$RAFTDIR_SERVER``; the token (the admin token or an access token)
from ``--token-file`` or ``$RAFTDIR_TOKEN`` (``$RAFTDIR_ADMIN_TOKEN``, its older name).

Must not be imported by the library (the core, the server, the API, the agent).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Sequence
from urllib.parse import urlsplit

import click

from . import __version__
from .api.peerview import _hostport, _reason, _role, peer_rows  # noqa: F401 (peers, demo)
from .codec import dumps_json, to_dict
from .config import CLUSTER_MODE_FILE as CLUSTER_MODE
from .config import dump_yaml, load_with_warnings
from .errors import BadRequest, ConfigError, RaftdirError, Unauthorized
from .limits import (
    MAX_TOKEN_USES, MAX_TOKEN_VALID_SECS, check_service_name, check_token_name, parse_node_id,
    parse_token_id,
)

__all__ = ["main", "cli", "render_table"]

EXIT_FAILED = 1
EXIT_USAGE = 2

SERVER_ENV = "RAFTDIR_SERVER"
TOKEN_ENV = "RAFTDIR_TOKEN"
#: The older name of ``$RAFTDIR_TOKEN``, still read when that is not set.
ADMIN_TOKEN_ENV = "RAFTDIR_ADMIN_TOKEN"
DEBUG_ENV = "RAFTDIR_DEBUG"

log = logging.getLogger("raftdir.cli")

#: ``raftdir serve``'s garbage-collection thresholds: CPython's young generations, and a
#: full collection at most every 1,000 middle ones instead of 10 (docs/design.md).
SERVE_GC_THRESHOLD = "700,10,1000"


# ============================================================================ errors

class Failed(click.ClickException):
    """The operation failed (exit 1); printed as ``error: <message>``."""

    exit_code = EXIT_FAILED

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class Unusable(Failed):
    """A usage or configuration problem found after parsing (exit 2)."""

    exit_code = EXIT_USAGE


def _describe_failure(exc: BaseException, where: str | None) -> str:
    """``PEER: reason`` for any failure of a call (every peer's reason when none
    answered)."""
    errors = getattr(exc, "errors", None)
    if errors:
        return "; ".join(f"{_hostport(s)}: {_reason(e)}" for s, e in errors.items())
    if isinstance(exc, RaftdirError):
        text = f"{_hostport(where)}: {exc.message}"
        if exc.code not in exc.message:
            text += f" ({exc.code})"
        if isinstance(exc, Unauthorized) and ("needs a token" in exc.message
                                              or "needs the admin token" in exc.message):
            text += (f"; pass --token-file FILE or set ${TOKEN_ENV} (`raftdir token admin "
                     "--data-dir DIR` prints the admin token; `raftdir token create --scope` "
                     "issues access tokens)")
        return text
    return f"{_hostport(where)}: {_reason(exc)}"


# ============================================================================ output

def render_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart under an upper-case header. ``None`` prints
    as ``-``; every other cell as ``str``. The one renderer every listing uses."""
    cells = [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """Wire objects, tuples and dicts as JSON-able plain data."""
    from .codec import Wire
    if isinstance(value, Wire):
        return to_dict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _json_text(data: Any, *, compact: bool = False) -> str:
    if compact:
        return json.dumps(_plain(data), separators=(",", ":"), sort_keys=True)
    return json.dumps(_plain(data), indent=2, sort_keys=True)


@dataclass
class Listing:
    """What a listing command prints: a table (columns, rows, lines before and after it)
    and the JSON document ``--json`` prints instead."""

    columns: Sequence[str]
    rows: list[Sequence[Any]]
    data: Any
    header: str | None = None
    footer: str | None = None

    def text(self) -> str:
        parts = [self.header] if self.header else []
        parts.append(render_table(self.columns, self.rows))
        if self.footer:
            parts.append(self.footer)
        return "\n".join(parts)


def _emit(listing: Listing, as_json: bool, *, compact: bool = False) -> None:
    try:
        click.echo(_json_text(listing.data, compact=compact) if as_json else listing.text())
    except BrokenPipeError:
        _reader_gone()


def _reader_gone() -> None:
    """stdout's reader went away (``| head``): a normal end of the output, exit 0. What is
    still buffered goes to /dev/null, so nothing complains at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    raise click.exceptions.Exit(0)


def _secs(value: float | None, suffix: str = "") -> str | None:
    if value is None:
        return None
    return f"{value:.1f}s{suffix}"


def _ago(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    if seconds < 0.05:
        return "now"
    if seconds < 120:
        return f"{seconds:.1f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _when(unix_secs: float, now: float) -> str | None:
    """A past wall-clock time: relative within a day, else the UTC date and time."""
    if now - unix_secs < 86400:
        return _ago(max(0.0, now - unix_secs))
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(unix_secs))


def _labels(labels: dict[str, str] | None) -> str | None:
    if not labels:
        return None
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


# ============================================================================ parameters

class Duration(click.ParamType):
    """Seconds as ``3600``, ``90s``, ``15m``, ``1h``, ``2d`` or ``1h30m``."""

    name = "duration"
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    _PART = re.compile(r"([0-9]+)([smhd])")

    def __init__(self, maximum: int | None = None) -> None:
        self.maximum = maximum

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text.isascii() and text.isdigit():
            secs = int(text)
        elif text and self._PART.sub("", text) == "":
            secs = sum(int(n) * self._UNITS[u] for n, u in self._PART.findall(text))
        else:
            self.fail(f"{value!r} is not a duration (e.g. 3600, 90s, 15m, 1h, 2d)", param, ctx)
        if secs <= 0:
            self.fail(f"{value!r} must be more than 0 seconds", param, ctx)
        if self.maximum is not None and secs > self.maximum:
            self.fail(f"{value!r} is more than the maximum of {self.maximum} seconds", param,
                      ctx)
        return secs


class NodeId(click.ParamType):
    """A node id, spelled as the API's ``{id}`` must be (``limits.parse_node_id``): plain
    decimal, no leading zero, at most 2^64-1."""

    name = "id"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return parse_node_id(str(value))
        except BadRequest:
            self.fail(f"{value!r} is not a node id (decimal digits without a leading zero, "
                      "at most 18446744073709551615)", param, ctx)


class TokenId(click.ParamType):
    """An access token's id (16 lowercase hex digits), as the API's path takes it."""

    name = "id"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        try:
            return parse_token_id(str(value))
        except BadRequest as exc:
            self.fail(exc.message.split(": ", 1)[1], param, ctx)


class ServiceName(click.ParamType):
    """A service name, checked as the API checks it (``limits.check_service_name``: a DNS
    label), so a bad one is exit 2 before any request."""

    name = "service"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        try:
            check_service_name(str(value), "service")
        except BadRequest as exc:
            self.fail(exc.message.split(": ", 1)[1], param, ctx)
        return str(value)


class RoleGroup(click.ParamType):
    """``role=i,j,k`` (indices, or ranges ``a-b``) as ``(role, (i, j, k))``, sorted."""

    name = "role=indices"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, tuple[int, ...]]:
        if isinstance(value, tuple):
            return value
        role, sep, spec = str(value).partition("=")
        role = role.strip()
        if not sep or not role or not spec.strip():
            self.fail(f"{value!r}: expected role=i,j (e.g. db=0,1 or web=0-3)", param, ctx)
        try:
            check_service_name(role, "role")
        except BadRequest as exc:
            self.fail(exc.message, param, ctx)
        indices: list[int] = []
        for part in spec.split(","):
            part = part.strip()
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not m:
                self.fail(f"{value!r}: {part!r} is not an index or a range a-b", param, ctx)
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi < lo:
                self.fail(f"{value!r}: the range {part!r} runs backwards", param, ctx)
            indices.extend(range(lo, hi + 1))
        if len(set(indices)) != len(indices):
            self.fail(f"{value!r}: an index appears twice", param, ctx)
        return role, tuple(sorted(indices))


def _split_servers(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        out += [s for s in re.split(r"[,\s]+", value) if s]
    return out


@dataclass
class Conn:
    """Where a command sends its requests, from the common options. Resolved lazily so
    that a group (``peers``) does not need a server when one of its subcommands runs."""

    server_args: tuple[str, ...]
    timeout: float
    tls_ca: str | None
    token_file: str | None
    admin: bool
    tls_cert: str | None = None
    tls_key: str | None = None

    def servers(self) -> list[str]:
        servers = _split_servers(self.server_args) or _split_servers(
            [os.environ.get(SERVER_ENV, "")])
        if not servers:
            raise Unusable(f"no server given: pass --server HOST:PORT (repeatable) or set "
                           f"${SERVER_ENV}")
        return servers

    def admin_token(self) -> str | None:
        if self.token_file:
            try:
                token = Path(self.token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise Unusable(f"--token-file: {self.token_file}: "
                               f"{(exc.strerror or str(exc)).lower()}") from None
            except UnicodeDecodeError:
                raise Unusable(f"--token-file: {self.token_file}: not a token (the file "
                               "is not UTF-8 text)") from None
            if not token:
                raise Unusable(f"--token-file: {self.token_file}: the file is empty")
            return token
        return (os.environ.get(TOKEN_ENV, "").strip()
                or os.environ.get(ADMIN_TOKEN_ENV, "").strip() or None)

    def client(self, retries: int = 2) -> Any:
        from .api.client import RaftdirClient

        class CliClient(RaftdirClient):
            """Remembers which server it asked last, so an error names that peer."""

            last_server: str | None = None

            async def _send(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
                parts = urlsplit(url)
                self.last_server = f"{parts.scheme}://{parts.netloc}"
                return await super()._send(method, url, *args, **kwargs)

        ssl_ctx = None
        if bool(self.tls_cert) != bool(self.tls_key):
            raise click.UsageError("--tls-cert and --tls-key go together")
        if self.tls_ca or self.tls_cert:
            import ssl
            ssl_ctx = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                ssl_ctx.load_cert_chain(self.tls_cert, self.tls_key)
        servers = self.servers()
        try:
            return CliClient(servers, admin_token=self.admin_token(), timeout=self.timeout, retries=retries, backoff=(0.05, 0.5),
                             ssl=ssl_ctx)
        except (RaftdirError, ValueError) as exc:
            raise Unusable(f"--server: {getattr(exc, 'message', exc)}") from None


def client_options(admin: str | None = None, timeout: float = 5.0,
                   timeout_help: str = "Seconds to wait for each answer."
                   ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options every networked command shares; the command gets ``conn: Conn``.
    ``admin``: the scope the command needs (``operate``, ``admin``), for its help; None
    for a read (open on a loopback-only API)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, servers: tuple[str, ...], timeout: float,
                    tls_ca: str | None, tls_cert: str | None, tls_key: str | None,
                    token_file: str | None = None, **kwargs: Any) -> Any:
            conn = Conn(servers, timeout, tls_ca, token_file, admin is not None, tls_cert,
                        tls_key)
            return fn(*args, conn=conn, **kwargs)

        wrapper = click.option(
            "--token-file", type=click.Path(dir_okay=False), metavar="FILE",
            help=f"A file holding the token to send: the admin token (`raftdir token admin` "
                 f"prints it) or an access token (`raftdir token create --scope`; "
                 f"{'this command needs ' + admin if admin else 'reads need read'} or "
                 f"higher). Default: ${TOKEN_ENV} (or ${ADMIN_TOKEN_ENV}).")(wrapper)
        wrapper = click.option(
            "--tls-ca", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
            envvar="RAFTDIR_TLS_CA",
            help="PEM file of the CA that signed the servers' certificates (https).")(wrapper)
        wrapper = click.option(
            "--tls-key", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
            envvar="RAFTDIR_TLS_KEY", help="PEM key of --tls-cert.")(wrapper)
        wrapper = click.option(
            "--tls-cert", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
            envvar="RAFTDIR_TLS_CERT",
            help="PEM client certificate, for servers that require one (serve "
                 "--tls-ca).")(wrapper)
        wrapper = click.option(
            "--timeout", type=click.FloatRange(min=0.05), default=timeout, show_default=True,
            help=timeout_help)(wrapper)
        wrapper = click.option(
            "--server", "-s", "servers", multiple=True, metavar="HOST:PORT",
            help=f"A server's API endpoint (host:port or http(s)://host:port); repeat it or "
                 f"separate with commas. Default: ${SERVER_ENV}.")(wrapper)
        return wrapper

    return deco


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON on stdout instead of a table.")(fn)


def watch_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--count", type=click.IntRange(min=0), default=0, metavar="N",
                      help="With --watch: stop after N redraws (0: until Ctrl-C).")(fn)
    fn = click.option("--interval", type=click.FloatRange(min=0.05), default=2.0,
                      show_default=True, help="With --watch: seconds between redraws.")(fn)
    fn = click.option("--watch", "-w", is_flag=True,
                      help="Redraw every --interval seconds until Ctrl-C (with --json: one "
                           "JSON document per line).")(fn)
    return fn


# ============================================================================ running

def _run(conn: Conn, body: Callable[[Any], Awaitable[Any]], *, retries: int = 2) -> Any:
    """Run ``body(client)`` on a fresh event loop; failures become exit 1 naming the
    peer."""
    client = conn.client(retries)

    async def go() -> Any:
        async with client:
            return await body(client)

    try:
        return asyncio.run(go())
    except click.ClickException:
        raise
    except BrokenPipeError:   # a --watch whose reader went away
        _reader_gone()
    except Exception as exc:  # noqa: BLE001 - every failure is a message, not a traceback
        import aiohttp
        if not isinstance(exc, (RaftdirError, aiohttp.ClientError, OSError,
                                asyncio.TimeoutError)):
            raise
        raise Failed(_describe_failure(exc, client.last_server)) from None


async def _prefer_leader(client: Any) -> None:
    """Reads whose answer only the leader knows (TTL left, last report): ask the server
    list who leads and try the leader first (still failing over to the others)."""
    from .api.client import normalize_endpoint
    try:
        health = await client.health()
    except RaftdirError:
        return
    leader = health.get("leader") if isinstance(health, dict) else None
    if not leader or health.get("is_leader"):
        return
    url = normalize_endpoint(leader, default_scheme=urlsplit(client.preferred).scheme)
    if url not in client.servers:
        client.servers.insert(0, url)
    client.preferred = url


def _watch_loop(conn: Conn, frame: Callable[[Any, int], Awaitable[Listing | None]], *,
                watch: bool, interval: float, count: int, as_json: bool,
                title: str) -> None:
    """Print one frame, or with ``watch`` redraw every ``interval`` seconds until Ctrl-C
    (or ``count`` frames). A frame that fails is reported and the watch goes on."""
    if not watch:
        listing = _run(conn, lambda client: frame(client, 0))
        if listing is not None:
            _emit(listing, as_json)
        return
    tty = sys.stdout.isatty()

    async def loop(client: Any) -> None:
        n = 0
        while True:
            try:
                listing = await frame(client, n)
            except (RaftdirError, OSError, asyncio.TimeoutError) as exc:
                listing = None
                problem = _describe_failure(exc, client.last_server)
            else:
                problem = None
            if as_json:
                if listing is not None:
                    click.echo(_json_text(listing.data, compact=True))
            else:
                if tty:
                    click.clear()
                stamp = time.strftime("%H:%M:%S")
                click.echo(f"Every {interval:g}s: raftdir {title}    {stamp}\n")
                if listing is not None:
                    click.echo(listing.text())
                if not tty:
                    click.echo("")
            if problem is not None:
                click.echo(f"error: {problem}", err=True)
            n += 1
            if count and n >= count:
                return
            await asyncio.sleep(interval)

    try:
        _run(conn, loop, retries=0)
    except KeyboardInterrupt:
        pass  # Ctrl-C ends a watch: exit 0


# ============================================================================ the group

@click.group(context_settings={"help_option_names": ["-h", "--help"],
                               "max_content_width": 100})
@click.version_option(__version__, prog_name="raftdir")
def cli() -> None:
    """raftdir: a Raft-replicated cluster membership directory (worker leases, profiles
    and assignment revisions).

    Run a server with `raftdir serve --data-dir DIR`; inspect and steer a cluster with the
    other commands, which find the servers in --server or $RAFTDIR_SERVER and the token in
    --token-file or $RAFTDIR_TOKEN (the admin token, or an access token of the scope the
    command needs; reads on a server bound to loopback need none). Exit status: 0 ok, 1
    the operation failed, 2 usage or configuration error.
    """


# ---------------------------------------------------------------------------- config

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

    Each FILE is read by its extension (.yaml, .yml or .json; any other name is refused,
    whether the file exists or not). A missing FILE is an error here (a daemon whose data
    dir has no cluster_mode.yaml runs single-node). On the first invalid file the error is
    printed to stderr as FILE: path: problem, and the exit status is 2.
    """
    for i, path in enumerate(files):
        try:
            mode, warnings = load_with_warnings(path, missing_ok=False)
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


# ---------------------------------------------------------------------------- daemons

def _data_dir_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--data-dir", required=True, metavar="DIR",
                        type=click.Path(file_okay=False, path_type=Path),
                        help="The data directory (cluster_mode.yaml, cluster.secret, raft/, "
                             "worker/).")(fn)


def _log_level_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--log-level", default="info", show_default=True,
                        type=click.Choice(["debug", "info", "warning", "error"]),
                        help="Log level (logs go to stderr).")(fn)


def _setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_raftdir_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._raftdir_cli = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level.upper())


def _load_config(data_dir: Path) -> Any:
    """DIR/cluster_mode.yaml (missing: single-node), as ``Daemon.from_data_dir`` reads
    it; a bad file is exit 2 with FILE: path: problem."""
    from .config import load_cluster_mode
    try:
        return load_cluster_mode(data_dir / CLUSTER_MODE)
    except ConfigError as exc:
        raise Unusable(exc.message) from None


def _run_daemon(daemon: Any, what: str) -> None:
    """Start the daemon, run until SIGINT/SIGTERM, stop it cleanly (exit 0)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread / Windows
                pass
        await daemon.start()
        try:
            status = daemon.status()
            log.info("%s started: mode %s, node %s%s", what, status.get("mode"),
                     status.get("node_id"),
                     f", API {status['api']}" if status.get("api") else "")
            await stop.wait()
            log.info("%s stopping", what)
        finally:
            await daemon.stop()
        log.info("%s stopped", what)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except ConfigError as exc:
        raise Unusable(exc.message) from None
    except RaftdirError as exc:
        raise Failed(f"{what}: {exc.message}") from None
    except OSError as exc:
        raise Failed(f"{what}: {_reason(exc)}"
                     + (f" ({exc.filename})" if getattr(exc, "filename", None) else "")
                     ) from None


@cli.command()
@_data_dir_option
@click.option("--api-host", metavar="HOST",
              help="Bind the HTTP API to this host (default: the host of the peer's api_addr; "
                   "single-node: 127.0.0.1).")
@click.option("--api-port", type=click.IntRange(1, 65535), metavar="PORT",
              help="single-node: serve the HTTP API on this port (default 3669).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="PEM certificate chain: serve the API over https.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="PEM key of --tls-cert.")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="PEM CA: clients and peers must present certificates it signed (the "
                   "server certificates then need the clientAuth usage too).")
@click.option("--tls-peer-ca", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="PEM CA that signed the other servers' certificates, checked when this "
                   "server forwards a request to the leader or asks a peer (default: "
                   "--tls-ca, else the system's CAs).")
@click.option("--replica-max-lag", type=click.FloatRange(min=0.1), default=5.0,
              show_default=True, metavar="SECONDS",
              help="A replica (peers entry with replica: true) refuses polls while it last "
                   "held everything the leader had committed longer ago than this.")
@click.option("--election-timeout", type=click.FloatRange(min=0.2, max=60.0), default=None,
              metavar="SECONDS",
              help="The minimum Raft election timeout (default 0.2; the maximum is three "
                   "times it). Raise it (every server alike) where a loaded host pauses a "
                   "server longer than that, e.g. garbage collections of a large fleet "
                   "(docs/operations.md): failovers then take about this much longer.")
@click.option("--gc-threshold", default=SERVE_GC_THRESHOLD, show_default=True,
              metavar="GEN0[,GEN1[,GEN2]]",
              callback=lambda ctx, param, value: _gc_threshold(value),
              help="Python's garbage-collection thresholds for this server (gc."
                   "set_threshold). CPython's 700,10,10 runs a full collection, which "
                   "stops the server for up to seconds on a large fleet, every few "
                   "seconds under load (docs/operations.md, Large fleets).")
@click.option("--max-connections", type=click.IntRange(min=1), default=10_000,
              show_default=True, metavar="N",
              help="At most N API connections at once; each parked poll holds one, so a "
                   "server needs about (workers / servers) plus a few hundred. Lowered to "
                   "80% of the open-file limit, which serve raises to its hard limit.")
@click.option("--require-read-token", is_flag=True,
              help="Answer reads (listings, service state, /metrics) only with a token of "
                   "scope read or higher on a loopback address too (off loopback they always "
                   "need one).")
@_log_level_option
def serve(data_dir: Path, api_host: str | None, api_port: int | None, tls_cert: str | None,
          tls_key: str | None, tls_ca: str | None, tls_peer_ca: str | None,
          replica_max_lag: float, election_timeout: float | None, max_connections: int,
          gc_threshold: tuple[int, ...] | None, require_read_token: bool,
          log_level: str) -> None:
    """Run a server from DIR/cluster_mode.yaml until SIGINT or SIGTERM.

    single-node, raft, static and worker-tier server configs are served here (a
    worker-tier worker runs with `raftdir worker`). Logs go to stderr; a clean stop exits
    0; a bad config exits 2 with FILE: path: problem.
    """
    from .daemon import Daemon, DaemonOptions, TlsFiles
    from .model import SingleNodeMode

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    for name, value in (("--tls-ca", tls_ca), ("--tls-peer-ca", tls_peer_ca)):
        if value and not tls_cert:
            raise click.UsageError(f"{name} needs --tls-cert and --tls-key")
    config = _load_config(data_dir)
    if config.is_worker_tier_worker():
        raise Unusable(f"{data_dir / CLUSTER_MODE}: role: this is a worker-tier worker "
                       "config; run it with `raftdir worker`")
    if isinstance(config, SingleNodeMode) and api_port is None:
        api_port = 3669
    tls = TlsFiles(tls_cert, tls_key, tls_ca) if tls_cert and tls_key else None
    tuning = None
    if election_timeout is not None:
        from .replication.tuning import RaftTuning
        tuning = RaftTuning.with_election_timeout(election_timeout)
    daemon = Daemon(config, data_dir, options=DaemonOptions(
        api_host=api_host, api_port=api_port, tls=tls, tls_trust=tls_peer_ca,
        replica_max_lag=replica_max_lag, raft_tuning=tuning,
        max_connections=max_connections, require_read_token=require_read_token))
    _setup_logging(log_level)
    _raise_open_file_limit()
    if gc_threshold:
        import gc
        gc.set_threshold(*gc_threshold)
    _run_daemon(daemon, "server")


def _gc_threshold(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        parts = tuple(int(x) for x in value.split(","))
    except ValueError:
        parts = ()
    if not 1 <= len(parts) <= 3 or any(x < 1 for x in parts):
        raise click.BadParameter(f"{value!r}: one to three positive integers, comma "
                                 "separated (e.g. 50000,20,100)", param_hint="--gc-threshold")
    return parts


def _raise_open_file_limit() -> None:
    """Raise this process's soft open-file limit to its hard limit, as Go programs do: a
    server holds a socket per parked poll, and a 1,024 soft limit would cap it far below
    what the host allows (``LimitNOFILE=`` sets both limits under systemd)."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.info("open-file limit raised from %d to %s", soft,
                     "unlimited" if hard == resource.RLIM_INFINITY else hard)
    except (ImportError, OSError, ValueError) as exc:
        log.info("open-file limit left as it is: %s", exc)


@cli.group(invoke_without_command=True)
@click.option("--data-dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="The worker's data directory (cluster_mode.yaml, worker/); required to "
                   "run the worker.")
@click.option("--api-addr", default=None, metavar="HOST:PORT",
              help="This worker's own API address, as servers should dial it (its "
                   "profile's api_addr; default 127.0.0.1:3669, which servers on other "
                   "hosts cannot reach: a warning says so).")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              envvar="RAFTDIR_TLS_CA",
              help="PEM file of the CA that signed the servers' certificates (https "
                   "servers; default: the system's CAs).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="PEM client certificate, for servers that require one (serve --tls-ca).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="PEM key of --tls-cert.")
@_log_level_option
@click.pass_context
def worker(ctx: click.Context, data_dir: Path | None, api_addr: str | None,
           tls_ca: str | None, tls_cert: str | None, tls_key: str | None,
           log_level: str) -> None:
    """Run a worker-tier worker from DIR/cluster_mode.yaml until SIGINT or SIGTERM.

    The daemon starts the worker agent: it registers with the join token in token_file,
    keeps its identity under identity_dir, reports and polls. One agent per identity: a
    second one on the same identity_dir exits 2 naming the pid of the one running. A
    worker restarted with another --api-addr or other labels registers its new profile.
    Logs go to stderr; a clean stop exits 0; a config that is not a worker-tier worker
    exits 2.

    `raftdir worker status --data-dir DIR` shows what the worker's agent knows instead.
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = data_dir   # `raftdir worker --data-dir DIR status` works too
        return
    if data_dir is None:
        raise click.UsageError("Missing option '--data-dir'.")
    from .codec import ADDR
    from .daemon import Daemon, DaemonOptions, TlsFiles

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")

    if api_addr is not None:
        try:
            api_addr = ADDR.decode(api_addr, "--api-addr")
        except RaftdirError as exc:
            raise Unusable(exc.message) from None
    config = _worker_config(data_dir)
    try:
        import raftdir.agent  # noqa: F401
    except ImportError as exc:
        raise Failed(f"worker: the worker agent is not available ({exc})") from None
    tls = TlsFiles(tls_cert, tls_key) if tls_cert and tls_key else None
    daemon = Daemon(config, data_dir, options=DaemonOptions(advertise_addr=api_addr, tls=tls,
                                                            tls_trust=tls_ca))
    _setup_logging(log_level)
    _run_daemon(daemon, "worker")


def _worker_config(data_dir: Path) -> Any:
    config = _load_config(data_dir)
    if not config.is_worker_tier_worker():
        raise Unusable(f"{data_dir / CLUSTER_MODE}: mode: `raftdir worker` needs a "
                       f"worker-tier config with role: worker (this is {config.TAG}); run "
                       "servers with `raftdir serve`")
    return config


def _status_text(doc: dict[str, Any], running: bool, pid: int | None, now_ms: int) -> str:
    """``raftdir worker status`` as ``key  value`` lines."""
    def ago(unix_ms: int | None) -> str | None:
        return None if unix_ms is None else _ago(max(0.0, (now_ms - unix_ms) / 1000))

    reports, leader = doc.get("report_server"), doc.get("leader")
    if not reports:
        reports_to = "-"
    elif leader and _hostport(reports) == _hostport(leader):
        reports_to = f"{_hostport(reports)} (the leader)"
    else:   # a follower forwards reports to the leader
        reports_to = f"{_hostport(reports)} (leader {_hostport(leader) if leader else '?'})"
    since = ago(doc.get("state_since_unix_ms"))
    services = doc.get("services") or {}
    lines = [
        ("node", f"{doc.get('node_id') or 'not registered'}"
                 + (f" (cluster {doc['cluster_id']})" if doc.get("cluster_id") else "")),
        ("agent", f"running, pid {pid}" if running else
                  f"not running (last pid {doc.get('pid')}; this status was written "
                  f"{ago(doc.get('updated_unix_ms')) or '?'})"),
        ("state", f"{doc.get('state')} ({doc.get('reason')})"
                  + (f", since {since}" if since else "")),
        ("reports to", reports_to),
        ("revision", str(doc.get("revision", 0))),
        ("last ack", (f"{ago(doc['last_ack_unix_ms'])}" if doc.get("last_ack_unix_ms")
                      else "never") + f" (ttl {doc.get('ttl_secs')}s, grace "
                                      f"{doc.get('grace_secs')}s)"),
        ("api addr", str(doc.get("api_addr"))),
        ("labels", _labels(doc.get("labels")) or "-"),
        ("services", "; ".join(
            f"{name} " + " ".join(f"{role}={','.join(map(str, ix))}"
                                  for role, ix in sorted(roles.items()))
            for name, roles in sorted(services.items())) or "none"),
        ("containers", " ".join(doc.get("assignments") or []) or "none"),
    ]
    if doc.get("draining"):
        lines.append(("draining", "yes: no new placement on this node"))
    width = max(len(k) for k, _ in lines) + 2
    return "\n".join(f"{k.ljust(width)}{v}" for k, v in lines)


@worker.command("status")
@click.option("--data-dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="The worker's data directory (its cluster_mode.yaml says where the "
                   "identity_dir is).")
@json_option
@click.pass_context
def worker_status(ctx: click.Context, data_dir: Path | None, as_json: bool) -> None:
    """Show a worker's own view, from the status file its agent keeps.

    Reads identity_dir/status.json (the agent rewrites it when something changes) and
    checks identity_dir/agent.lock: node id, whether the agent runs (and its pid), the
    connection state (connected, suspended or lost, and why), the server that
    acknowledged its last report (a follower forwards reports to the leader) and the
    leader, the assignment revision it holds, its services and containers, and how long
    ago a report was last acknowledged. No server is asked.

    Exit status: 0 when an agent runs with DIR; 1 when none does (its last status is
    still printed) or none ever ran; 2 for a DIR that is not a worker's.
    """
    from .agent import default_identity_dir, lock_holder, read_status
    from .agent.status import STATUS_FILE

    data_dir = data_dir or (ctx.obj if isinstance(ctx.obj, Path) else None)
    if data_dir is None:
        raise click.UsageError("Missing option '--data-dir'.")
    config = _worker_config(data_dir)
    identity_dir = Path(config.identity_dir) if config.identity_dir \
        else default_identity_dir(data_dir)
    try:
        doc = read_status(identity_dir)
        running, pid = lock_holder(identity_dir)
    except (ConfigError, OSError) as exc:   # a file the agent wrote: unreadable or not ours
        raise Failed(exc.message if isinstance(exc, ConfigError)
                     else f"{identity_dir}: {_reason(exc)}") from None
    if doc is None:
        raise Failed(f"{identity_dir / STATUS_FILE}: no status: no worker agent has run with "
                     f"this identity (start one with `raftdir worker --data-dir {data_dir}`)")
    now_ms = int(time.time() * 1000)
    if as_json:
        last = doc.get("last_ack_unix_ms")
        click.echo(_json_text(dict(
            doc, running=running, agent_pid=pid if running else None,
            last_ack_secs_ago=None if last is None else round(max(0, now_ms - last) / 1000, 3),
            status_file=str(identity_dir / STATUS_FILE))))
    else:
        click.echo(_status_text(doc, running, pid, now_ms))
    if not running:
        raise Failed(f"no worker agent is running with {identity_dir} (the status above is "
                     "the last one it wrote)")


# ---------------------------------------------------------------------------- peers

def peers_listing(rows: list[dict[str, Any]]) -> Listing:
    columns = ("ID", "RAFT ADDR", "API ADDR", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG",
               "LAST CONTACT")
    table = [(r["id"], r["raft_addr"], r["api_addr"], r["role"], r["term"], r["commit"],
              r["applied"], r["lag"],
              _ago(r["last_contact_secs"]) if r["asked"] else None) for r in rows]
    failures = [f"{r['api_addr']}: {r['error']}" for r in rows if r["error"] and r["asked"]]
    return Listing(columns, table, rows, footer="\n".join(failures) or None)


#: Seconds ``raftdir peers`` waits for each peer: they are asked at once, so a stopped or
#: hung peer costs this much, not the 5 s other commands wait.
PEER_TIMEOUT = 2.0


@cli.group(invoke_without_command=True)
@client_options(timeout=PEER_TIMEOUT,
                timeout_help="Seconds to wait for each peer's answer (all are asked at once, "
                             "so a peer that does not answer costs this much).")
@json_option
@watch_options
@click.pass_context
def peers(ctx: click.Context, conn: Conn, as_json: bool, watch: bool, interval: float,
          count: int) -> None:
    """List the Raft peers, asking every server given (not just one).

    Columns: ID, RAFT ADDR, API ADDR, ROLE (leader, follower, candidate, replica or
    unreachable), TERM, COMMIT, APPLIED, LAG (the leader's commit index minus the peer's
    last applied) and LAST CONTACT (when this command last got an answer from the peer). A
    peer that does not answer is a row, not a failure: the exit status is 1 only when no
    peer answers. Every peer is one row, named by its id when a peer that answered knows it
    (a dead peer too); Raft members that the answers name but --server does not are listed
    as well, and so are the read-only replicas (no vote, no Raft address) the leader hears
    from, with what it knows of them (their applied index and lag).

    With a subcommand (add, remove), changes the membership instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    seen: dict[str, float] = {}

    async def frame(client: Any, n: int) -> Listing:
        rows = await peer_rows(client, seen)
        if not watch and not any(r["asked"] and r["error"] is None for r in rows):
            raise Failed("no peer answered: " + "; ".join(
                f"{r['api_addr']}: {r['error']}" for r in rows if r["asked"]))
        return peers_listing(rows)

    _watch_loop(conn, frame, watch=watch, interval=interval, count=count, as_json=as_json,
                title="peers")


def _membership_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--api-addr", metavar="HOST:PORT",
                      help="The peer's HTTP API address (required to add).")(fn)
    fn = click.option("--raft-addr", required=True, metavar="HOST:PORT",
                      help="The peer's Raft address.")(fn)
    fn = click.option("--id", "peer_id", required=True, type=NodeId(),
                      help="The peer's node id.")(fn)
    return fn


def _change_peer(conn: Conn, method: str, body: dict[str, Any], as_json: bool) -> None:
    async def go(client: Any) -> Any:
        if method == "POST" and hasattr(client, "add_peer"):
            return await client.add_peer(body["id"], body["raft_addr"], body["api_addr"])
        if method == "DELETE" and hasattr(client, "remove_peer"):
            return await client.remove_peer(body["id"], body["raft_addr"])
        # An older client without the membership methods: the same request by hand.
        return await client._call(method, "/api/v1/cluster/peers", body, auth="admin",
                                  write=True)

    # No retries: a membership change is not idempotent, and its outcome may be unknown
    # (the leader waits up to 10 s for it to commit), which `raftdir peers` then shows.
    conn = replace(conn, timeout=max(conn.timeout, 15.0))
    try:
        result = _run(conn, go, retries=0)
    except Failed as exc:
        if "timeout_outcome_unknown" in exc.message or "no answer in" in exc.message:
            exc.message += "; check with `raftdir peers` before trying again"
        raise
    if as_json:
        click.echo(_json_text(result))
    else:
        verb = "added" if method == "POST" else "removed"
        click.echo(f"peer {body['id']} ({body['raft_addr']}) {verb}")


@peers.command("add")
@_membership_options
@client_options(admin="admin")
@json_option
def peers_add(peer_id: int, raft_addr: str, api_addr: str | None, conn: Conn,
              as_json: bool) -> None:
    """Add one voting Raft peer (the leader commits the change).

    One change at a time: wait for this to succeed, then start the new peer with the full
    new peer list in its cluster_mode.yaml.
    """
    if not api_addr:
        raise click.BadParameter("required to add a peer", param_hint="'--api-addr'")
    _change_peer(conn, "POST", {"id": peer_id, "raft_addr": raft_addr, "api_addr": api_addr},
                 as_json)


@peers.command("remove")
@_membership_options
@client_options(admin="admin")
@json_option
def peers_remove(peer_id: int, raft_addr: str, api_addr: str | None, conn: Conn,
                 as_json: bool) -> None:
    """Remove one Raft peer (stop it first). The leader can be removed too: it hands
    leadership to the most caught-up peer, which then removes it."""
    body: dict[str, Any] = {"id": peer_id, "raft_addr": raft_addr}
    if api_addr:
        body["api_addr"] = api_addr
    _change_peer(conn, "DELETE", body, as_json)


# ---------------------------------------------------------------------------- workers, leases

def _workers_listing(nodes: list[dict[str, Any]], with_kind: bool) -> Listing:
    columns = ["ID", "STATE", "API ADDR", "TTL LEFT", "LAST REPORT", "OS", "ARCH", "LABELS"]
    if with_kind:
        columns.insert(1, "KIND")
    rows = []
    for node in nodes:
        profile = node.get("profile") or {}
        state = node.get("state")
        if node.get("draining") and state != "draining":
            state = f"{state},draining"
        row = [node.get("node_id"), state, profile.get("api_addr"),
               _secs(node.get("ttl_left_secs")),
               _ago(node.get("last_report_secs_ago")), profile.get("os"),
               profile.get("arch"), _labels(profile.get("labels"))]
        if with_kind:
            row.insert(1, node.get("kind"))
        rows.append(row)
    return Listing(columns, rows, nodes)


@cli.command()
@client_options()
@json_option
@watch_options
@click.option("--kind", type=click.Choice(["worker", "server", "all"]), default="worker",
              show_default=True,
              help="Which nodes to list (servers are nodes too in raft mode); with server or "
                   "all, a KIND column is added.")
def workers(conn: Conn, as_json: bool, watch: bool, interval: float, count: int,
            kind: str) -> None:
    """List the workers of the directory (--kind: the servers too).

    Columns: ID, STATE (ready, down, draining), API ADDR, TTL LEFT (seconds until the lease
    lapses; only the leader knows, so the leader is asked first), LAST REPORT, OS, ARCH,
    LABELS. The profile columns are what the worker last registered (a worker restarted
    with another address or labels registers them again).
    """

    async def frame(client: Any, n: int) -> Listing:
        await _prefer_leader(client)  # every frame: the leader may have changed
        nodes = await client.workers()
        if kind != "all":
            nodes = [x for x in nodes if x.get("kind", "worker") == kind]
        return _workers_listing(nodes, with_kind=kind != "worker")

    _watch_loop(conn, frame, watch=watch, interval=interval, count=count, as_json=as_json,
                title="workers")


@cli.command()
@client_options()
@json_option
def leases(conn: Conn, as_json: bool) -> None:
    """List every worker's lease: its TTL and grace, when it was last renewed in the
    replicated state (checkpoints), and the seconds left on the leader."""

    async def go(client: Any) -> Listing:
        await _prefer_leader(client)
        items = await client.leases()
        now = time.time()
        columns = ("ID", "API ADDR", "OS", "ARCH", "TTL", "GRACE", "ACQUIRED", "RENEWED",
                   "TTL LEFT")
        # no reachable API (ZLayer's 0.0.0.0:0 of a gRPC-registered worker) shows as "-"
        rows = [(lease.node_id, lease.profile.reachable_api_addr, lease.profile.os,
                 lease.profile.arch,
                 f"{lease.ttl_secs}s", f"{lease.grace_secs}s",
                 _when(lease.acquired_unix_secs, now), _when(lease.renewed_unix_secs, now),
                 _secs(left))
                for lease, left in items]
        data = [{**to_dict(lease), "ttl_left_secs": left} for lease, left in items]
        return Listing(columns, rows, data)

    _emit(_run(conn, go), as_json)


# ---------------------------------------------------------------------------- services

@cli.command()
@click.argument("service", type=ServiceName())
@client_options()
@json_option
def ps(service: str, conn: Conn, as_json: bool) -> None:
    """List SERVICE's containers across the cluster, as the nodes last reported them."""

    async def go(client: Any) -> Listing:
        containers = await client.containers(service)
        columns = ("NODE", "CONTAINER", "REPLICA", "STATE", "IMAGE", "PID", "OVERLAY IP")
        rows = [(c.node_id, c.id, c.replica, c.state, c.image or None, c.pid, c.overlay_ip)
                for c in containers]
        return Listing(columns, rows, containers)

    _emit(_run(conn, go), as_json)


@cli.command("service-state")
@click.argument("service", type=ServiceName())
@client_options()
@json_option
def service_state(service: str, conn: Conn, as_json: bool) -> None:
    """Show SERVICE's state per node: running containers and health, plus the nodes that
    hold a share but have not reported since the leader took over (unknown)."""

    async def go(client: Any) -> Listing:
        state = await client.service_state(service)
        columns = ("NODE", "RUNNING", "HEALTHY", "CONTAINERS")
        rows = [(n.node_id, n.running, "yes" if n.healthy else "no",
                 " ".join(c.id for c in n.containers) or None) for n in state["nodes"]]
        header = (f"service {state.get('service', service)}: {state.get('running', 0)} "
                  f"running, {'healthy' if state.get('healthy') else 'not healthy'}")
        unknown = state.get("unknown") or []
        footer = (f"unknown (no report yet): {', '.join(map(str, unknown))}" if unknown
                  else None)
        return Listing(columns, rows, state, header=header, footer=footer)

    _emit(_run(conn, go), as_json)


def _groups_text(req: Any) -> str:
    return " ".join(f"{g.role}:{','.join(map(str, g.indices))}" for g in req.groups()) or "-"


@cli.command()
@click.argument("service", type=ServiceName())
@click.argument("replicas", metavar="N", type=click.IntRange(min=0))
@click.option("--role-group", "role_groups", multiple=True, type=RoleGroup(),
              help="role=i,j (indices or ranges a-b), repeatable: scale in role groups "
                   "(N must equal the number of indices).")
@click.option("--spec", metavar="JSON",
              help="The service spec as a JSON object, handed to the nodes with the order.")
@client_options(admin="operate")
@json_option
def scale(service: str, replicas: int, role_groups: tuple[tuple[str, tuple[int, ...]], ...],
          spec: str | None, conn: Conn, as_json: bool) -> None:
    """Scale SERVICE to N replicas; prints each node's share.

    Without --role-group the replicas are one `default` group with indices 0..N-1. With
    role groups, every index is named (e.g. --role-group db=0,1 --role-group web=0-2 for
    N=5). Needs a token of scope operate (or the admin token).
    """
    from .model import InternalScaleRequest, ScaleAssignment

    spec_obj = None
    if spec is not None:
        try:
            spec_obj = json.loads(spec)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="'--spec'") from None
        if not isinstance(spec_obj, dict):
            raise click.BadParameter("must be a JSON object", param_hint="'--spec'")
    try:
        if role_groups:
            roles = [r for r, _ in role_groups]
            if len(set(roles)) != len(roles):
                raise click.BadParameter("a role appears twice", param_hint="'--role-group'")
            total = sum(len(ix) for _, ix in role_groups)
            if total != replicas:
                raise click.BadParameter(
                    f"N is {replicas} but the role groups hold {total} indices",
                    param_hint="'--role-group'")
            req = InternalScaleRequest.phase2(
                service, [ScaleAssignment(role=r, indices=ix) for r, ix in role_groups],
                spec=spec_obj)
        else:
            req = InternalScaleRequest.legacy(service, replicas, spec=spec_obj)
        req = InternalScaleRequest.from_dict(to_dict(req))  # the wire checks, before sending
    except RaftdirError as exc:
        raise click.BadParameter(exc.message, param_hint="SERVICE/N") from None

    split = _run(conn, lambda client: client.scale(req))
    rows = [(node, r.replicas, _groups_text(r)) for node, r in sorted(split.items())]
    data = {"service": service, "replicas": replicas,
            "nodes": [{"node_id": n, "request": to_dict(r)} for n, r in sorted(split.items())]}
    _emit(Listing(("NODE", "REPLICAS", "ASSIGNMENTS"), rows, data,
                  header=None if as_json else f"scaled {service} to {replicas}"), as_json)


# ---------------------------------------------------------------------------- nodes

def _node_write(conn: Conn, op: str, node_id: int, as_json: bool) -> None:
    result = _run(conn, lambda client: getattr(client, op)(node_id))
    if as_json:
        click.echo(_json_text(result))
    elif isinstance(result, dict):
        click.echo(" ".join(
            f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
            for k, v in result.items()))
    else:
        click.echo(str(result))


@cli.command()
@click.argument("node_id", metavar="ID", type=NodeId())
@click.option("--undo", is_flag=True,
              help="Undo the drain: the node takes new placement again (what moved away "
                   "stays where it is).")
@client_options(admin="operate")
@json_option
def drain(node_id: int, undo: bool, conn: Conn, as_json: bool) -> None:
    """Drain node ID: no new placement on it, and its share moves away; with --undo, make
    it eligible again (Nomad's node eligibility). Needs a token of scope operate."""
    _node_write(conn, "undrain" if undo else "drain", node_id, as_json)


@cli.command()
@click.argument("node_id", metavar="ID", type=NodeId())
@client_options(admin="operate")
@json_option
def evict(node_id: int, conn: Conn, as_json: bool) -> None:
    """Remove node ID's record: its share is placed elsewhere and it must register again.
    Needs a token of scope operate."""
    _node_write(conn, "evict", node_id, as_json)


# ---------------------------------------------------------------------------- tokens, secrets

@cli.group()
def token() -> None:
    """Join tokens (for workers), scoped access tokens (for people and tools) and the admin
    token."""


SCOPE_HELP = ("read: listings, service state, metrics, the dashboard; operate: also scale, "
              "drain, evict, join tokens; admin: also membership, access tokens, backups, "
              "digests")


@token.command("create")
@click.option("--scope", type=click.Choice(["read", "operate", "admin"]),
              help=f"Issue a scoped access token instead of a join token ({SCOPE_HELP}).")
@click.option("--name", default="", metavar="NAME",
              help="With --scope: a name for `raftdir token list` (1-64 of A-Z a-z 0-9 . _ "
                   "@ : -).")
@click.option("--viewer", is_flag=True,
              help="Shorthand for --scope read: a token that reads (the dashboard at /ui, "
                   "listings) and changes nothing.")
@click.option("--valid-for", type=Duration(maximum=MAX_TOKEN_VALID_SECS), default="1h",
              show_default=True,
              help="How long the token is valid: 3600, 90s, 15m, 1h, 2d (at most 365d).")
@click.option("--max-uses", type=click.IntRange(0, MAX_TOKEN_USES), default=None,
              help=f"A join token: how many registrations it allows (0: no limit; at most "
                   f"{MAX_TOKEN_USES}; default 1).")
@client_options(admin="operate (a join token) or admin (--scope)")
@json_option
def token_create(scope: str | None, name: str, viewer: bool, valid_for: int,
                 max_uses: int | None, conn: Conn, as_json: bool) -> None:
    """Issue a join token and print it (a worker registers with it; needs operate), or
    with --scope S an access token of that scope (needs admin). An access token is shown
    once: the cluster keeps only its hash, its id and its metadata (`raftdir token list`),
    and `raftdir token revoke ID` makes every server refuse it."""
    if viewer:
        if scope not in (None, "read"):
            raise click.BadParameter("--viewer is --scope read", param_hint="'--viewer'")
        scope = "read"
    if scope is None:
        if name:
            raise click.BadParameter("a name is for an access token (--scope)",
                                     param_hint="'--name'")
        uses = 1 if max_uses is None else max_uses
        result = _run(conn, lambda client: client.create_token(valid_for, uses))
    else:
        if max_uses is not None:
            raise click.BadParameter("is for a join token, not an access token (--scope)",
                                     param_hint="'--max-uses'")
        try:
            check_token_name(name)
        except BadRequest as exc:
            raise click.BadParameter(exc.message.split(": ", 1)[1],
                                     param_hint="'--name'") from None
        result = _run(conn, lambda client: client.create_access_token(scope, valid_for, name))
    click.echo(_json_text(result) if as_json else result["token"])


def _tokens_listing(rows: list[dict[str, Any]]) -> Listing:
    def when(ms: int | None) -> str | None:
        if not ms:
            return None
        return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))
    columns = ("ID", "NAME", "SCOPE", "STATE", "CREATED", "EXPIRES", "CREATOR")
    table = [(r["token_id"], r["name"] or None, r["scope"],
              r["state"] + (f" {when(r['revoked_ms'])}" if r.get("revoked_ms") else ""),
              when(r["created_ms"]), when(r["expires_ms"]), r["creator"]) for r in rows]
    return Listing(columns, table, rows)


@token.command("list")
@client_options(admin="admin")
@json_option
def token_list(conn: Conn, as_json: bool) -> None:
    """List the access tokens the cluster keeps (never a token, never its hash): ID, NAME,
    SCOPE, STATE (active, expired, or revoked with when), CREATED, EXPIRES, CREATOR.
    Revoked and expired tokens are listed for 7 days. Needs admin."""
    rows = _run(conn, lambda client: client.access_tokens(consistent=True))
    _emit(_tokens_listing(rows), as_json)


@token.command("revoke")
@click.argument("token_id", metavar="ID", type=TokenId())
@client_options(admin="admin")
@json_option
def token_revoke(token_id: str, conn: Conn, as_json: bool) -> None:
    """Revoke the access token ID (as `raftdir token list` shows it): once the revocation
    is committed, every server refuses the token. Needs admin."""
    result = _run(conn, lambda client: client.revoke_access_token(token_id))
    if as_json:
        click.echo(_json_text(result))
    elif result.get("revoked"):
        click.echo(f"revoked access token {token_id}")
    else:
        click.echo(f"access token {token_id} was revoked already")


def _load_secret_or_exit(data_dir: Path) -> str:
    from .replication.secret import load_secret, secret_path
    try:
        secret = load_secret(data_dir)
    except ConfigError as exc:
        raise Unusable(exc.message) from None
    except OSError as exc:
        raise Unusable(f"{secret_path(data_dir)}: {_reason(exc)}") from None
    if secret is None:
        raise Unusable(f"{secret_path(data_dir)}: no cluster secret (create one with "
                       f"`raftdir secret create --data-dir {data_dir}`)")
    return secret


@token.command("admin")
@_data_dir_option
def token_admin(data_dir: Path) -> None:
    """Print the admin token derived from DIR/cluster.secret (every server accepts it).

    Keep it like the secret: e.g. `raftdir token admin --data-dir DIR > admin.token`
    then `--token-file admin.token`, or export RAFTDIR_TOKEN. It is the bootstrap
    credential: issue access tokens (`raftdir token create --scope`) for people and tools,
    which can be revoked one by one and survive a roll of the cluster secret.
    """
    from .auth import admin_token
    click.echo(admin_token(_load_secret_or_exit(data_dir)))


@cli.group()
def snapshot() -> None:
    """Backups of the directory: save one from a running cluster, inspect a file, seed a
    new server's data dir from one (docs/operations.md, "Backup and restore")."""


@snapshot.command("save")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@client_options(admin="admin")
@json_option
def snapshot_save(file: Path, conn: Conn, as_json: bool) -> None:
    """Save a backup of the directory to FILE (written atomically, mode 0600). The server
    commits a barrier through the leader first, so the backup holds every write
    acknowledged before the command started. Needs a token of scope admin."""
    from .backup import decode_backup
    from .files import write_atomic
    data = _run(conn, lambda client: client.backup(timeout=max(conn.timeout, 30.0)))
    backup = decode_backup(data, "the server's answer")   # checked before it is kept
    try:
        write_atomic(file, data)
    except OSError as exc:
        raise Failed(f"{file}: {_reason(exc)}") from None
    summary = backup.summary()
    if as_json:
        click.echo(_json_text(dict(summary, file=str(file), bytes=len(data))))
    else:
        click.echo(f"saved {file}: revision {backup.revision}, cluster {backup.cluster_id}, "
                   f"{len(data)} bytes, sha256 {backup.sha256[:16]}...")


@snapshot.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def snapshot_inspect(file: Path, as_json: bool) -> None:
    """Check FILE (format, checksum, that this raftdir can restore it) and print what it
    holds. Exit 2 when it is not a backup this raftdir can restore."""
    from .backup import read_backup
    try:
        summary = read_backup(file).summary()
    except ConfigError as exc:
        raise Unusable(exc.message) from None
    if as_json:
        click.echo(_json_text(summary))
        return
    taken = summary["taken_on"]
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC",
                            time.gmtime(summary["created_unix_ms"] / 1000))
    w = summary["workers"]
    for key, value in (
            ("file", str(file)), ("format", summary["format"]),
            ("cluster id", summary["cluster_id"]), ("revision", summary["revision"]),
            ("created", created),
            ("taken on", f"node {taken['node_id']} (term {taken['term']}, applied index "
                         f"{taken['applied_index']})"),
            ("checksum", f"sha256 {summary['sha256']} ({summary['checksum']})"),
            ("servers", summary["servers"]),
            ("workers", f"{w['ready']} ready, {w['draining']} draining, {w['down']} down"),
            ("services", summary["services"]), ("token uses", summary["token_uses"]),
            ("access tokens", summary["access_tokens"]),
            ("events", f"{summary['events']} (compacted below revision "
                       f"{summary['compacted_revision']})")):
        click.echo(f"{key + ':':<14} {value}")


@snapshot.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_data_dir_option
@click.option("--force", is_flag=True,
              help="Restore even though DIR/raft holds Raft data (it is moved aside into "
                   "DIR/raft/before-<time>/, never deleted).")
@json_option
def snapshot_restore(file: Path, data_dir: Path, force: bool, as_json: bool) -> None:
    """Seed a new server's data dir from FILE. DIR must hold the server's
    cluster_mode.yaml (and its cluster.secret); restore every server of the new cluster
    from the same file, then start them. Nodes, leases, services and token use counts
    come back as saved; workers keep their identities and reconnect."""
    from .backup import read_backup, restore_backup
    done = _offline(data_dir, lambda: restore_backup(read_backup(file), data_dir, force=force))
    if as_json:
        click.echo(_json_text(done))
        return
    click.echo(f"restored revision {done['revision']} of cluster {done['cluster_id']} "
               f"into {done['wrote']}")
    if done["moved_aside"]:
        click.echo(f"the Raft data that was there is in {done['moved_aside']}")
    if not done["secret_present"]:
        click.echo(f"warning: {data_dir}/cluster.secret is missing: copy the cluster's "
                   "secret there before you start the server (join tokens and node "
                   "identities need it)", err=True)
    if done["servers_not_configured"]:
        click.echo("warning: the backup holds server nodes that this config does not list: "
                   f"{done['servers_not_configured']}; remove them once the cluster runs "
                   "(`raftdir peers remove`)", err=True)
    click.echo(f"start it: raftdir serve --data-dir {data_dir}")


@cli.command()
@_data_dir_option
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              envvar="RAFTDIR_TLS_CA",
              help="PEM CA of the servers' API certificates (when the API is https).")
@click.option("--timeout", type=click.FloatRange(min=0.05), default=2.0, show_default=True,
              help="Seconds to wait for each peer's answer.")
@json_option
def recover(data_dir: Path, tls_ca: str | None, timeout: float, as_json: bool) -> None:
    """Bring this stopped peer back as a new single-peer cluster holding everything it
    has, after a majority of the servers is lost for good. Then start it with `raftdir
    serve`, remove the lost peers and add new ones (`raftdir peers`).

    Refuses while this server runs, or while any other peer of its config answers with
    a leader (the old cluster still works: recovering would split it). The original
    config, dump and journal are kept next to the new ones (*.before-recover)."""
    from .backup import recover_single_peer, server_config
    try:
        mode, peers = server_config(data_dir)
    except ConfigError as exc:
        raise Unusable(exc.message) from None
    if not peers:
        raise Unusable(f"{data_dir / CLUSTER_MODE}: peers: single-node has no majority "
                       "to lose")
    scheme = "https" if tls_ca else "http"
    answers = _ask_health(peers, scheme, tls_ca, timeout)
    for peer in peers:
        health = answers.get(peer.id)
        if peer.id == mode.node_id and health is not None:
            raise Failed(f"peer {peer.id} (this one) answers at {peer.api_addr}: stop its "
                         "server before recovering it")
        if peer.id != mode.node_id and health is not None and (
                health.get("is_leader") or health.get("leader")):
            raise Failed(f"peer {peer.id} at {peer.api_addr} answers and knows a leader "
                         f"({health.get('leader') or 'itself'}): the cluster still has a "
                         "majority; do not recover (it would split the cluster)")
    done = _offline(data_dir, lambda: recover_single_peer(data_dir))
    if as_json:
        click.echo(_json_text(done))
        return
    click.echo(f"peer {done['kept_peer']} is now a single-peer cluster "
               f"(lost peers: {', '.join(map(str, done['lost_peers']))})")
    click.echo(f"  {done['config']}: peers reduced to this one (original kept as "
               f"{CLUSTER_MODE}.before-recover)")
    if done["dump"]:
        click.echo(f"  {done['dump']}: Raft membership reduced to this peer")
    if done["journal_membership_entries"]:
        click.echo(f"  raft.journal: {done['journal_membership_entries']} membership "
                   "change(s) made no-ops")
    click.echo(f"next: raftdir serve --data-dir {data_dir}; then `raftdir peers remove` "
               "each lost peer and `raftdir peers add` new ones")


def _offline(data_dir: Path, work: Callable[[], Any]) -> Any:
    """Run an offline change to a data dir: a file it refuses is exit 2 naming it, an I/O
    failure exit 1."""
    try:
        return work()
    except ConfigError as exc:
        raise Unusable(exc.message) from None
    except OSError as exc:
        raise Failed(f"{data_dir}: {_reason(exc)}") from None


def _ask_health(peers: list[Any], scheme: str, tls_ca: str | None, timeout: float
                ) -> dict[int, dict[str, Any] | None]:
    """``{peer id: its /health answer, or None when it does not answer}``, all at once."""
    from .api.client import RaftdirClient

    async def go() -> dict[int, dict[str, Any] | None]:
        ssl_ctx = None
        if tls_ca:
            import ssl
            ssl_ctx = ssl.create_default_context(cafile=tls_ca)
        urls = {p.id: f"{scheme}://{p.api_addr}" for p in peers}
        async with RaftdirClient(list(urls.values()), timeout=timeout, retries=0,
                                 ssl=ssl_ctx) as client:
            async def one(url: str) -> dict[str, Any] | None:
                try:
                    answer = await client.health(server=url)
                except Exception:  # noqa: BLE001 - no answer is the point of the question
                    return None
                return answer if isinstance(answer, dict) else None
            found = await asyncio.gather(*(one(u) for u in urls.values()))
        return dict(zip(urls, found))

    return asyncio.run(go())


@cli.group()
def secret() -> None:
    """The cluster secret (DIR/cluster.secret): the same file on every server, and rolling
    it on a running cluster (create --next, promote, retire; docs/operations.md)."""


def _secret_files(action: Callable[[], Any], data_dir: Path) -> Any:
    try:
        return action()
    except ConfigError as exc:
        raise Unusable(exc.message.replace("pass force=True", "pass --force")) from None
    except OSError as exc:
        raise Unusable(f"{exc.filename or data_dir}: {_reason(exc)}") from None


@secret.command("create")
@_data_dir_option
@click.option("--force", is_flag=True,
              help="Replace an existing file (every server then needs the new one).")
@click.option("--next", "next_", is_flag=True,
              help="Write DIR/cluster.secret.next instead: the new secret of a roll, which a "
                   "running server accepts besides its own once the file is there.")
def secret_create(data_dir: Path, force: bool, next_: bool) -> None:
    """Write a new random cluster.secret (mode 0600) into DIR, creating DIR if needed, or
    with --next the next secret of a roll.

    Refuses to overwrite an existing file without --force (exit 2). Copy the file to
    every server's data dir; it keys Raft traffic, join tokens and the admin token.
    """
    from .replication.secret import NEXT_SECRET_FILE, create_secret, load_secret, secret_path
    target = data_dir / NEXT_SECRET_FILE if next_ else secret_path(data_dir)

    def write() -> None:
        if next_ and load_secret(data_dir) is None:
            raise ConfigError(f"{secret_path(data_dir)}: no cluster secret to roll; create "
                              "one first (raftdir secret create)")
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        create_secret(target, force=force)
    _secret_files(write, data_dir)
    click.echo(f"wrote {target} (mode 0600); copy it to every server's data dir"
               + (" (as cluster.secret.next), then promote it on each server in turn"
                  if next_ else ""), err=True)


@secret.command("promote")
@_data_dir_option
def secret_promote(data_dir: Path) -> None:
    """Make DIR/cluster.secret.next this server's secret; the old one stays accepted as
    DIR/cluster.secret.prev. The running server picks it up within a second: it then sends
    Raft traffic under the new secret, signs join tokens with it and derives its admin
    token from it. Do it only when every server holds the next secret (`raftdir secret
    status`), one server at a time."""
    from .replication.secret import fingerprint, promote_secret
    held = _secret_files(lambda: promote_secret(data_dir), data_dir)
    click.echo(f"{data_dir}: cluster.secret is now {fingerprint(held.primary)}; the old "
               f"{fingerprint(held.prev)} is still accepted (cluster.secret.prev) until "
               "`raftdir secret retire`")


@secret.command("retire")
@_data_dir_option
def secret_retire(data_dir: Path) -> None:
    """Stop accepting the old secret on this server (remove DIR/cluster.secret.prev): join
    tokens and the admin token of the old secret stop working here. Do it only when every
    server was promoted (`raftdir secret status`)."""
    from .replication.secret import fingerprint, retire_secret
    held = _secret_files(lambda: retire_secret(data_dir), data_dir)
    click.echo(f"{data_dir}: only {fingerprint(held.primary)} is accepted now")


def secret_status_listing(answers: dict[str, Any]) -> Listing:
    columns = ("SERVER", "ID", "PHASE", "OWN SECRET", "ACCEPTS", "RAFT KEYS")
    rows, data = [], []
    for server, answer in answers.items():
        if isinstance(answer, BaseException):
            rows.append((_hostport(server), None, None, None, None, _reason(answer)))
            data.append({"server": server, "error": _reason(answer)})
            continue
        held = answer.get("secrets") or {}
        keys = answer.get("raft_keys") or []
        rows.append((_hostport(server), answer.get("node_id"), held.get("phase"),
                     held.get("primary"), " ".join(held.get("accepts") or []) or None,
                     " ".join(keys) or None))
        data.append({"server": server, "node_id": answer.get("node_id"), **held,
                     "raft_keys": keys})
    return Listing(columns, rows, data, footer=_roll_advice(data))


def _roll_advice(rows: list[dict[str, Any]]) -> str | None:
    """What the roll may do next, from every server's answer (None when a server is
    missing: nothing can be said for sure)."""
    if not rows or any("error" in r or not r.get("primary") for r in rows):
        return "not every server answered: finish a step on every server before the next"
    owns = {r["primary"] for r in rows}
    common = set.intersection(*(set(r.get("accepts") or ()) for r in rows))
    if not owns <= common:
        return ("servers do not all accept each other's secret: they cannot all talk Raft; "
                "copy cluster.secret.next to every server before promoting")
    if all(r["phase"] == "steady" for r in rows):
        return "no roll in progress: every server holds one secret, the same"
    if all(r["phase"] == "next installed" for r in rows):
        return "every server accepts the next secret: promote it, one server at a time"
    if len(owns) == 1 and all(r["phase"] in ("promoted", "steady") for r in rows):
        return "every server was promoted: retire the old secret, one server at a time"
    return ("a roll is in progress and every server accepts every server's own secret: "
            "finish this step on every server before the next")


@secret.command("status")
@client_options(timeout=PEER_TIMEOUT)
@json_option
def secret_status(conn: Conn, as_json: bool) -> None:
    """Which secrets every server holds (by fingerprint: 16 hex digits of a key derived
    from the secret, never the secret), its phase in a roll and the keys its Raft traffic
    uses, asking every server given; then what the roll may do next. Exit 1 when no
    server answers."""
    answers = _run(conn, lambda client: client.per_server("peers"))
    if not any(not isinstance(a, BaseException) for a in answers.values()):
        raise Failed("no server gave its status: " + "; ".join(
            _describe_failure(a, s) for s, a in answers.items()))
    _emit(secret_status_listing(answers), as_json)


# ---------------------------------------------------------------------------- demo
# `raftdir demo` lives in raftdir/demo.py (written separately), which exposes the click
# command `demo_command`. It is registered here when that module exists; if it exists but
# fails to import, `raftdir demo` says why instead of breaking every other command.

def _register_demo() -> None:
    try:
        from .demo import demo_command
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == f"{__package__}.demo":
            return  # no demo in this build
        problem = f"{type(exc).__name__}: {exc}"

        @cli.command("demo", context_settings={"ignore_unknown_options": True})
        @click.argument("args", nargs=-1, type=click.UNPROCESSED)
        def demo_unavailable(args: tuple[str, ...]) -> None:
            """The three-peer local demo (unavailable: its module failed to import)."""
            raise Failed(f"demo: raftdir.demo failed to import ({problem})")
        return
    cli.add_command(demo_command, "demo")


_register_demo()


# ============================================================================ entry point

def main() -> None:
    """Console-script entry point. An unexpected exception is one line on stderr and exit
    1 (set RAFTDIR_DEBUG=1 for the traceback)."""
    try:
        cli.main(prog_name="raftdir", standalone_mode=True)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - a CLI never shows a traceback by default
        if os.environ.get(DEBUG_ENV):
            raise
        click.echo(f"error: unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for "
                   "the traceback)", err=True)
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    main()
