"""``shoal serve``: the web app (FastAPI + uvicorn), over the same store as the CLI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from shoal.cli import app

SERVE_EXAMPLES = """
Examples:

  shoal serve                                   # http://127.0.0.1:5000, datasets from folders under the current one

  shoal serve --port 8080 --roots ~/photos ~/more-photos

  shoal serve --host 0.0.0.0 --allowed-host shoal.lab.example --token "$(python -c 'import secrets; print(secrets.token_urlsafe())')"

  shoal serve --allow-code                      # also accept network files (.py): only where every user may run code

  shoal serve --allow-private-urls              # classify-by-URL may fetch images from your own network

  shoal serve --host 0.0.0.0 --token "$TOKEN" --certfile cert.pem --keyfile key.pem   # HTTPS: the camera works from a phone
"""


@app.command(epilog=SERVE_EXAMPLES)
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on; anything but loopback needs --token."),
    port: int = typer.Option(5000, "--port", "-p", help="TCP port."),
    token: Optional[str] = typer.Option(None, "--token", envvar="SHOAL_TOKEN",
                                        help="Access token every request must carry (SHOAL_TOKEN)."),
    roots: Optional[list[Path]] = typer.Option(
        None, "--roots", help="Folders datasets may be built from on the server (repeat, or SHOAL_ROOTS); "
                              "default: the current folder."),
    max_image_mb: Optional[float] = typer.Option(None, "--max-image-mb", help="Largest image upload in MB (default 50)."),
    max_zip_mb: Optional[float] = typer.Option(None, "--max-zip-mb", help="Largest zip or weights upload in MB (default 2048)."),
    allowed_hosts: Optional[list[str]] = typer.Option(
        None, "--allowed-host", help="Another host name browsers may reach the server by (repeat); loopback names and "
                                     "--host are always allowed. '*' allows any (needs --token)."),
    allow_code: bool = typer.Option(False, "--allow-code",
                                    help="Accept network files (.py) from the web and run them (training, heat-maps): "
                                         "anyone who can reach the server may then run code as you."),
    allow_private_urls: bool = typer.Option(
        False, "--allow-private-urls",
        help="Let classify-by-URL fetch loopback, private and link-local addresses (by default only public ones): "
             "anyone who can reach the server may then make it request addresses on your network."),
    certfile: Optional[Path] = typer.Option(
        None, "--certfile", help="TLS certificate (PEM) to serve HTTPS: browsers allow the camera only on HTTPS "
                                 "(or localhost). Give --keyfile too."),
    keyfile: Optional[Path] = typer.Option(None, "--keyfile", help="The private key (PEM) of --certfile."),
) -> None:
    """Start the web app: datasets, models, live training charts, classification, downloads.

    Trainings and dataset builds run in worker processes, one training per device at a time;
    what the CLI creates appears in the app and the other way round (one store, SHOAL_HOME).
    """
    from shoal.extras import require

    require("web", "shoal serve")
    if (certfile is None) != (keyfile is None):
        raise typer.BadParameter("give --certfile and --keyfile together (the certificate and its private key) to "
                                 "serve HTTPS, or neither for HTTP", param_hint="--certfile/--keyfile")
    for option, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if path is not None and not path.is_file():
            raise typer.BadParameter(f"{str(path)!r} is not a file", param_hint=option)
    import uvicorn

    from shoal.server import Settings, create_app
    from shoal.server.config import MB

    if roots is None and not os.environ.get("SHOAL_ROOTS"):
        roots = [Path.cwd()]
    settings = Settings.from_env(
        host=host, port=port, token=token, roots=tuple(roots) if roots else None,
        max_image_bytes=int(max_image_mb * MB) if max_image_mb else None,
        max_zip_bytes=int(max_zip_mb * MB) if max_zip_mb else None,
        allowed_hosts=tuple(allowed_hosts) if allowed_hosts else None, allow_code=allow_code,
        allow_private_urls=allow_private_urls)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    address = f"{'https' if certfile else 'http'}://{shown}:{port}/" + (f"?token={settings.token}" if settings.token else "")
    typer.echo(f"shoal is serving {settings.home} at {address}", err=True)
    typer.echo(f"datasets may come from: {', '.join(str(r) for r in settings.roots) or 'uploads only'}", err=True)
    if settings.allow_code:
        typer.echo("--allow-code: network files (.py) uploaded through the web will run on this machine", err=True)
    if settings.allow_private_urls:
        typer.echo("--allow-private-urls: classify-by-URL may fetch addresses on this machine and its network", err=True)
    tls = {"ssl_certfile": str(certfile), "ssl_keyfile": str(keyfile)} if certfile and keyfile else {}
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=5, **tls)
