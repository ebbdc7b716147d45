"""``meterhub web``: serve the console, portal and API with waitress (``meterhub run`` supervises it)."""

from __future__ import annotations

import gc
import socket

import click


def freeze_startup_objects() -> None:
    """Take what the process holds once started (modules, the app, its plugins and catalogues: ~200,000 objects)
    out of the garbage collector's full passes. They live as long as the process, yet each full pass walked them
    all: one request in about twenty on the room monitor paid ~170 ms for it (issue 19 item 6)."""
    gc.collect()
    gc.freeze()


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
@click.option("--reuse-port", is_flag=True,
              help="Share the port with other `meterhub web` processes (SO_REUSEPORT): the kernel spreads "
                   "connections over them, so a host's cores all serve pages (one process runs Python on one).")
def web_command(host: str, port: int, threads: int, reuse_port: bool) -> None:
    """Serve the web app (console, tenant portal, REST API) until SIGTERM."""
    from waitress import serve

    from .app import create_app

    from .shared_keys import check_shared_keys

    app = create_app()
    check_shared_keys(app)  # logs an error when another host of the deployment signs with other keys
    freeze_startup_objects()
    # With TRUSTED_PROXIES the app's ProxyFix reads X-Forwarded-For/-Proto: waitress must hand them over.
    where = {"sockets": [shared_socket(host, port)]} if reuse_port else {"host": host, "port": port}
    serve(app, threads=threads, _quiet=True, clear_untrusted_proxy_headers=not app.config.get("TRUSTED_PROXIES"),
          **where)


def shared_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other processes may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock
