"""archive-search serve: the web page and JSON API over an index (archive_search.web, run by uvicorn)."""

from __future__ import annotations

from pathlib import Path

import click

from archive_search.cli.common import db_option, domain_errors, index_option, printable, resolve_index
from archive_search.errors import MissingToolError

LOOPBACK = ("127.0.0.1", "localhost")
"""Hosts the server answers to when it listens on loopback (TrustedHostMiddleware's allow list)."""


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@index_option
@db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Any other than loopback lets every machine that reaches it search the "
                   "archive and hear its audio (there is no login).")  # fmt: skip
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@domain_errors
def serve(index_dir: Path | None, db: str | None, host: str, port: int) -> None:
    """Serve a web page and a JSON API (OpenAPI at /openapi.json) that search the index and play every hit."""
    try:
        import uvicorn

        from archive_search.web import create_app
    except ImportError as exc:
        raise MissingToolError(f"archive-search serve needs the web extra ({exc.name} is missing): "
                               "pip install 'archive-search[web]'") from exc  # fmt: skip
    index = resolve_index(index_dir)
    loopback = host in LOOPBACK or host.startswith("127.")
    if not loopback:
        click.echo(f"warning: listening on {host}: anyone who can reach port {port} there can search this archive "
                   "and hear its audio; there is no login", err=True)  # fmt: skip
    click.echo(f"loading the index and the models: {printable(str(index))}", err=True)
    app = create_app(index, allowed_hosts=[*LOOPBACK, host] if loopback else None, db=db)
    click.echo(f"serving on http://{host}:{port}/ (Ctrl-C stops)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
