"""``meterhub web``: serve the console, portal and API with waitress (``meterhub run`` supervises it)."""

from __future__ import annotations

import gc

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
def web_command(host: str, port: int, threads: int) -> None:
    """Serve the web app (console, tenant portal, REST API) until SIGTERM."""
    from waitress import serve

    from .app import create_app

    from .shared_keys import check_shared_keys

    app = create_app()
    check_shared_keys(app)  # logs an error when another host of the deployment signs with other keys
    freeze_startup_objects()
    # With TRUSTED_PROXIES the app's ProxyFix reads X-Forwarded-For/-Proto: waitress must hand them over.
    serve(app, host=host, port=port, threads=threads, _quiet=True,
          clear_untrusted_proxy_headers=not app.config.get("TRUSTED_PROXIES"))
