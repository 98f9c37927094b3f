"""The `quyu` console script: serve, migrate, seed-demo, create-client, export-openapi,
worker, fake-wechat."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from app.config import Settings

cli = typer.Typer(help="quyu: regional party building backend", no_args_is_help=True)
console = Console()

ROOT = Path(__file__).resolve().parent.parent


def _settings() -> Settings:
    """The settings of this process, read once from the environment and installed: the
    command line is, beside `create_app`, the other place a process starts."""
    from app.config import get_settings
    from app.core.setup import install

    settings = get_settings()
    install(settings)
    return settings


def migrations_dir() -> Path:
    """The migration scripts: `alembic/` of the checkout, installed as `quyu_migrations`
    (setup.py), so a wheel without the repository migrates too."""
    import importlib

    package = importlib.import_module("quyu_migrations")
    return Path(next(iter(package.__path__)))


def _alembic_config(database_url: str | None = None) -> object:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("path_separator", "os")
    if database_url:
        cfg.attributes["database_url"] = database_url
    return cfg


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes")] = 1,
) -> None:
    """Serve the API with uvicorn (several processes with --workers N)."""
    import uvicorn

    settings = _settings()  # fail fast on bad configuration, before forking workers
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="quyu-metrics-")
    docs = " (docs at /docs)" if settings.docs_served else ""
    console.print(
        f"[bold]quyu[/] on http://{host}:{port}{docs}, {workers} worker(s), "
        f"database {settings.database_url.split('://')[0]}"
    )
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        proxy_headers=settings.trust_forwarded_for,
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
        log_config=None,
    )


@cli.command()
def migrate(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Bring the database schema up to date (alembic upgrade)."""
    from alembic import command

    command.upgrade(_alembic_config(), revision)  # type: ignore[arg-type]
    console.print(f"database migrated to {revision}")


@cli.command("seed-demo")
def seed_demo(
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="Only seed a database without any account")
    ] = False,
) -> None:
    """Load the demo places, accounts and city client; harmless to repeat."""
    from app.demo.loader import seed

    result = asyncio.run(seed(_settings(), only_if_empty=if_empty))
    console.print(str(result))


@cli.command("create-client")
def create_client(
    name: Annotated[str, typer.Argument(help="Client id, e.g. city-roster")],
    scopes: Annotated[str, typer.Option(help="Space-separated scopes, e.g. 'orgs:read'")],
    org_id: Annotated[str | None, typer.Option(help="Bind the client to one subtree")] = None,
) -> None:
    """Create a city-system client; its secret is shown once and stored hashed."""
    from sqlalchemy.exc import IntegrityError

    from app.identity.api_clients import create_client as _create

    try:
        secret = asyncio.run(_create(_settings(), name, scopes, org_id))
    except IntegrityError:
        console.print(f"[red]a client named {name!r} already exists (or the org does not)[/]")
        raise typer.Exit(1) from None
    console.print(f"client_id:     {name}\nclient_secret: {secret}\n(shown once; store it now)")


@cli.command("export-openapi")
def export_openapi(
    out: Annotated[Path, typer.Option(help="Where to write")] = ROOT / "openapi" / "openapi.json",
) -> None:
    """Write the OpenAPI document the app serves to openapi/openapi.json."""
    from app.main import create_app

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(openapi_text(create_app(configure_logs=False).openapi()), encoding="utf-8")
    console.print(f"wrote {out}")


@cli.command()
def worker(
    once: Annotated[bool, typer.Option("--once", help="Run one pass and exit")] = False,
) -> None:
    """Send WeChat subscribe messages from the outbox (and activity reminders)."""
    from app.wechat.runner import run_worker

    asyncio.run(run_worker(_settings(), once=once))


@cli.command("fake-wechat")
def fake_wechat(
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8900,
    send_delay: Annotated[
        float, typer.Option(help="Seconds before a subscribe message is answered", min=0)
    ] = 0.0,
) -> None:
    """A local stand-in for the WeChat API (point QUYU_WECHAT_API_BASE at it)."""
    import uvicorn

    from app.integrations.wechat.fake import FakeWechatState, create_fake_app

    settings = _settings()
    app_id = settings.wechat_app_id or "wx-quyu-dev"
    secret = settings.wechat_app_secret
    state = FakeWechatState(
        app_id=app_id,
        secret=secret.get_secret_value() if secret else "dev-secret",
        send_delay=send_delay,
    )
    console.print(
        f"fake WeChat on http://{host}:{port} for appid {app_id}; "
        f"messages received: http://{host}:{port}/__fake__/messages"
    )
    uvicorn.run(create_fake_app(state), host=host, port=port, log_level="warning")


def openapi_text(document: dict[str, object]) -> str:
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def main() -> None:
    cli()
