"""``vidclip serve DIR``: the search page and HTTP API over a library index.

Registered by :mod:`vidclip.cli.main` through :func:`add_serve_parser`.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys

from vidclip.core.errors import ConfigError
from vidclip.serve import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_K,
    DEFAULT_MAX_QUERY_CHARS,
    DEFAULT_MAX_RERANK,
    LOOPBACK_HOSTS,
)


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_for(host: str, port: int) -> str:
    """The URL to open for a server bound to ``host``:``port`` (wildcards -> 127.0.0.1)."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def cmd_serve(ns: argparse.Namespace) -> int:
    if not 0 <= ns.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {ns.port}")
    for name, value in (("--max-k", ns.max_k), ("--max-query-chars", ns.max_query_chars),
                        ("--max-image-bytes", ns.max_image_bytes)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if not 0 <= ns.max_rerank <= DEFAULT_MAX_RERANK:
        raise ConfigError(f"--max-rerank must be in 0..{DEFAULT_MAX_RERANK}, got {ns.max_rerank}")

    from vidclip.index.directory import IndexDir

    index_dir = IndexDir.require(ns.dir, option="")  # a wrong DIR is one line, before the port, uvicorn and the model

    import uvicorn

    from vidclip.index.search import VideoIndex
    from vidclip.serve.app import create_app

    # Bind first: a busy port is one clear error line, before the model is loaded, rather than
    # a server log traceback; and the printed URL names the real port (--port 0 picks one).
    sock = listen_socket(ns.host, ns.port)
    try:
        index = VideoIndex.open(index_dir)
    except BaseException:
        sock.close()
        raise
    local = is_loopback(ns.host)
    # On loopback, refuse Host headers naming other sites (DNS rebinding); when the user binds
    # to a public address they chose to be reachable under whatever name points at it.
    allowed = list(LOOPBACK_HOSTS) if local else None
    try:
        app = create_app(index, max_query_chars=ns.max_query_chars, max_k=ns.max_k, max_rerank=ns.max_rerank,
                         max_image_bytes=ns.max_image_bytes, allowed_hosts=allowed)
    except BaseException:
        sock.close()
        index.close()
        raise
    url = url_for(ns.host, sock.getsockname()[1])
    if app.state.random_weights:
        print("vidclip serve: note: this index uses RANDOM weights; rankings are not meaningful.",
              file=sys.stderr)
    if not local:
        print(f"vidclip serve: warning: listening on {ns.host}, so anyone who can reach this machine "
              "can search and watch the library.", file=sys.stderr)
    print(f"vidclip serve: {len(index)} videos from {index.library_root}", file=sys.stderr)
    print(f"Serving on {url}  (API docs: {url}docs; Ctrl+C to stop)", flush=True)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level=ns.log_level)).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shut down cleanly and re-raised the Ctrl+C: a normal stop
        print("vidclip serve: stopped", file=sys.stderr)
    finally:
        sock.close()
        index.close()
    return 0


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port``; ConfigError naming the address when that fails."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        # listen now, not when uvicorn starts: "Serving on URL" is printed before that, and a client
        # acting on it (a script, a test) must be queued, not refused
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen there: {e.strerror or e}") from None
    return sock


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve", help="search a library index in the browser (web page + HTTP API)",
        description="Serve a search page and JSON API over an index built with 'vidclip index'. Only videos in "
                    "the index's catalog are served, by id; the library folder is never written. Binds to "
                    "127.0.0.1 (this machine only) unless --host says otherwise.")
    p.add_argument("dir", metavar="DIR", help="index folder (as written by 'vidclip index')")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; 0.0.0.0 exposes the library to the network (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="TCP port; 0 picks a free one (the URL printed at start names it) (default: %(default)s)")
    p.add_argument("--max-k", type=int, default=DEFAULT_MAX_K,
                   help="largest number of hits a search may ask for (default: %(default)s)")
    p.add_argument("--max-query-chars", type=int, default=DEFAULT_MAX_QUERY_CHARS,
                   help="longest query accepted, in characters (default: %(default)s)")
    p.add_argument("--max-rerank", type=int, default=DEFAULT_MAX_RERANK,
                   help="most first-stage candidates a search may ask to re-score on their frames (?rerank=N); "
                        "0 turns two-stage search off (default: %(default)s, also the largest allowed)")
    p.add_argument("--max-image-bytes", type=int, default=DEFAULT_MAX_IMAGE_BYTES,
                   help="largest image body POST /search/image accepts, in bytes; larger ones get 413 "
                        "(default: %(default)s)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level (default: %(default)s)")
    p.set_defaults(func=cmd_serve)
    return p
