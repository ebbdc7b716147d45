"""``meterhub web``: serve the console, portal and API with waitress (``meterhub run`` supervises it)."""

from __future__ import annotations

import click


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
def web_command(host: str, port: int, threads: int) -> None:
    """Serve the web app (console, tenant portal, REST API) until SIGTERM."""
    from waitress import serve

    from .app import create_app

    serve(create_app(), host=host, port=port, threads=threads, _quiet=True)
