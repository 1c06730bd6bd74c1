"""The ``leadflow`` command: run one service, everything at once (dev), or migrate.

This is the only module that knows all three services; each is imported lazily by name, so the
services themselves stay independent of one another.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Leadflow: lead capture, scoring and routing.", no_args_is_help=True)

SERVICES = ("capture", "scoring", "routing")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("leadflow")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"leadflow {_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    _version_flag: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the installed Leadflow version and exit.",
    ),
) -> None:
    """Leadflow: lead capture, scoring and routing."""


def _serve(name: str) -> None:
    import uvicorn

    from shared.logs import configure_logging
    from shared.serving import SERVER_OPTIONS
    from shared.settings import get_settings

    settings = get_settings()
    configure_logging(settings.leadflow_log_level)
    port = getattr(settings, f"leadflow_{name}_port")
    options = {"host": settings.leadflow_host, "port": port, **SERVER_OPTIONS}
    workers = settings.leadflow_capture_workers if name == "capture" else 1
    if workers > 1:
        _serve_workers(name, workers, options)
        return
    main: Any = importlib.import_module(f"services.{name}.main")
    application = main.build_app(settings)
    uvicorn.Server(uvicorn.Config(application, **options)).run()


def _serve_workers(name: str, workers: int, options: dict[str, Any]) -> None:
    """Several processes on one port (uvicorn's supervisor restarts one that dies); their
    metrics are counted together in a directory that lives as long as this parent."""
    import os
    import shutil
    import tempfile

    from shared.metrics import MULTIPROCESS_DIR
    from shared.serving import serve_processes

    folder = tempfile.mkdtemp(prefix=f"leadflow-{name}-metrics-")
    os.environ[MULTIPROCESS_DIR] = folder  # inherited by the workers, read at their imports
    try:
        serve_processes(f"services.{name}.main:app_from_environment", workers, **options)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@app.command()
def capture() -> None:
    """Run the capture service (forms, downloads, webinars, tracking, ad platforms)."""
    _serve("capture")


@app.command()
def scoring() -> None:
    """Run the scoring service (lead state, score, temperature, stage)."""
    _serve("scoring")


@app.command()
def routing() -> None:
    """Run the routing service (assignment, SLA clocks, escalation)."""
    _serve("routing")


@app.command()
def migrate() -> None:
    """Apply every database migration (shared, capture, scoring, routing)."""
    _migrate_database()


def _migrate_database() -> None:
    from shared.db import create_engine
    from shared.migrate import MIGRATION_SETS
    from shared.migrate import migrate as run_migrations
    from shared.settings import get_settings

    async def _go() -> None:
        engine = create_engine(get_settings().db_url)
        try:
            for location, version_table in MIGRATION_SETS:
                typer.echo(f"migrating {location.split(':')[0]} ...")
                started = time.monotonic()
                await run_migrations(engine, [(location, version_table)])
                typer.echo(f"  {version_table} at head ({time.monotonic() - started:.1f}s)")
        finally:
            await engine.dispose()

    asyncio.run(_go())
    typer.echo("database migrated")


@app.command()
def init() -> None:
    """Create the Kafka topics and migrate the database: the one-shot job before the services.

    Topics get KAFKA_TOPIC_PARTITIONS partitions and KAFKA_REPLICATION_FACTOR replicas; a broker
    that refuses to create them stops this with the permission it lacks (exit 1).
    """
    from shared.bus import TopicSetupError, ensure_topics
    from shared.settings import get_settings

    settings = get_settings()
    typer.echo(
        f"topics    {settings.leadflow_topic_prefix}* on {settings.bootstrap_servers} "
        f"({settings.kafka_topic_partitions} partitions, "
        f"replication factor {settings.kafka_replication_factor})"
    )
    try:
        created = asyncio.run(asyncio.wait_for(ensure_topics(settings), 120))
    except TopicSetupError as exc:
        typer.echo(f"cannot create the topics: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"  created: {', '.join(created)}" if created else "  all exist already")
    _migrate_database()


@app.command()
def healthcheck(
    service: str = typer.Argument(..., help="capture, scoring or routing"),
    live: bool = typer.Option(False, "--live", help="Liveness (/healthz) instead of /readyz."),
    timeout: float = typer.Option(3.0, help="Seconds to wait for the answer."),
) -> None:
    """Exit 0 when the service on this host answers /readyz (or /healthz) with 200.

    For container health checks: the image has no curl, and the port comes from the same
    settings the service reads.
    """
    import httpx

    from shared.settings import get_settings

    if service not in SERVICES:
        typer.echo(f"unknown service {service!r} (one of {', '.join(SERVICES)})", err=True)
        raise typer.Exit(2)
    port = getattr(get_settings(), f"leadflow_{service}_port")
    url = f"http://127.0.0.1:{port}/{'healthz' if live else 'readyz'}"
    try:
        status = httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError as exc:
        typer.echo(f"{url}: {exc}", err=True)
        raise typer.Exit(1) from None
    if status != 200:
        typer.echo(f"{url}: {status}", err=True)
        raise typer.Exit(1)


@app.command()
def rescore() -> None:
    """Recompute every lead's score with the current config, in batches, while consuming."""
    module: Any = importlib.import_module("services.scoring.rescore")
    from shared.settings import get_settings

    started = time.monotonic()

    def progress(seen: int, changed: int) -> None:
        typer.echo(f"  {seen} leads read, {changed} changed ({time.monotonic() - started:.1f}s)")

    typer.echo("rescoring every lead with the current config ...")
    count = asyncio.run(module.rescore_all(get_settings(), progress=progress))
    typer.echo(f"rescored {count} leads")


deadletter_app = typer.Typer(
    help="Dead letters of this database (DATABASE_URL): list, show, replay.", no_args_is_help=True
)
app.add_typer(deadletter_app, name="deadletter")


def _with_engine(work: Any) -> Any:
    """Run ``work(engine)`` on an engine for DATABASE_URL, disposed afterwards."""
    from shared.db import create_engine
    from shared.settings import get_settings

    async def _go() -> Any:
        engine = create_engine(get_settings().db_url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(_go())


@deadletter_app.command("list")
def deadletter_list(
    include_replayed: bool = typer.Option(False, "--all", help="Include replayed ones."),
    limit: int = typer.Option(100, min=1, max=10_000),
) -> None:
    """Dead letters in id order: id, when, consumer, where from, type, reason."""
    from shared.deadletters import list_deadletters

    items = _with_engine(
        lambda e: list_deadletters(e, include_replayed=include_replayed, limit=limit)
    )
    for d in items:
        where = f"{d['topic']}/{d['kafka_partition']}/{d['kafka_offset']}"
        replayed = f" replayed as {d['replay_event_id']}" if d["replayed_at"] else ""
        typer.echo(
            f"{d['id']}\t{d['created_at']}\t{d['kind']}\t{d['consumer']}\t{where}\t"
            f"{d['ce_type'] or '-'}\t{d['reason']}{replayed}"
        )
    if not items:
        typer.echo("no dead letters")


@deadletter_app.command("show")
def deadletter_show(dead_id: int) -> None:
    """One dead letter as JSON, with its key, headers and value."""
    from shared.deadletters import as_json, get_deadletter

    item = _with_engine(lambda e: get_deadletter(e, dead_id))
    if item is None:
        typer.echo(f"no dead letter {dead_id}", err=True)
        raise typer.Exit(1)
    typer.echo(as_json(item))


@deadletter_app.command("replay")
def deadletter_replay(
    dead_id: int | None = typer.Argument(None),
    replay_all: bool = typer.Option(False, "--all", help="Replay every open dead letter."),
) -> None:
    """Send a dead letter back to its topic through the outbox (idempotent)."""
    from shared.deadletters import ReplayError, replay
    from shared.deadletters import replay_all as replay_every

    if replay_all == (dead_id is not None):
        typer.echo("give one dead letter id or --all", err=True)
        raise typer.Exit(2)
    if replay_all:
        for item_id, outcome in _with_engine(replay_every):
            typer.echo(f"{item_id}\t{outcome}")
        return
    assert dead_id is not None
    try:
        replay_id = _with_engine(lambda e: replay(e, dead_id))
    except LookupError:
        typer.echo(f"no dead letter {dead_id}", err=True)
        raise typer.Exit(1) from None
    except ReplayError as exc:
        typer.echo(f"dead letter {dead_id} cannot be replayed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{dead_id}\treplayed as {replay_id} (the service's relay publishes it)")


config_app = typer.Typer(help="Work with the YAML config file.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _config_checks(dev_mode: bool = False) -> list[tuple[str, Any]]:
    """Each service's own start-up check of the config file (schema, then cross-references).

    Outside dev mode routing also refuses ``http://`` webhook URLs, as it does at start-up.
    """
    from functools import partial

    from services.capture.config import parse_config
    from services.routing.config import load_routing_config
    from services.scoring.config import load_rules

    routing = partial(load_routing_config, require_https=not dev_mode)
    return [("capture", parse_config), ("scoring", load_rules), ("routing", routing)]


def _config_summary(results: dict[str, Any]) -> list[str]:
    """The checked config in plain words: what the services will do with it."""
    capture, rules, routing = results["capture"], results["scoring"], results["routing"]
    tracks = list(getattr(routing.nurture, "tracks", ()) or ())
    return [
        f"forms: {len(capture.forms)} ({', '.join(sorted(capture.forms))})",
        f"scoring: {len(rules.fit)} fit rules, {len(rules.engagement)} engagement rules; "
        f"MQL at fit >= {rules.mql.min_fit:g} and engagement >= {rules.mql.min_engagement:g}, "
        f"SQL at fit >= {rules.sql.min_fit:g} and engagement >= {rules.sql.min_engagement:g}",
        f"routing: {len(routing.teams)} teams ({', '.join(routing.teams)}), "
        f"{len(routing.reps)} reps, {len(routing.rules)} routing rules, "
        f"fallback team {routing.fallback_team}",
        f"SLA policies: {', '.join(routing.policies)}; {len(routing.webhooks)} webhooks",
        f"nurture tracks: {len(tracks)}"
        + (f" ({', '.join(t.name for t in tracks)})" if tracks else ""),
    ]


@config_app.command("check")
def config_check(
    file: Path = typer.Argument(..., help="The YAML config file (LEADFLOW_CONFIG) to check."),
    dev_mode: bool = typer.Option(
        False, "--dev", help="Check as in dev mode (LEADFLOW_DEV=1): http:// webhooks allowed."
    ),
) -> None:
    """Check a config file as the three services would at start-up: one line per problem,
    else a plain-words summary of what it sets up."""
    from shared.config import ConfigError, load_config

    try:
        raw = load_config(file)
    except ConfigError as exc:
        typer.echo(str(exc))
        raise typer.Exit(1) from None
    problems: list[str] = []
    results: dict[str, Any] = {}
    for name, check in _config_checks(dev_mode):
        try:
            results[name] = check(raw)
        except ConfigError as exc:
            problems.extend(line for line in str(exc).splitlines() if line not in problems)
    for line in problems:
        typer.echo(line)
    if problems:
        raise typer.Exit(1)
    for line in _config_summary(results):
        typer.echo(line)
    typer.echo("ok")


@config_app.command("show-default")
def config_show_default() -> None:
    """Print the packaged default config (what runs without LEADFLOW_CONFIG), to start from."""
    from shared.config import default_config_text

    typer.echo(default_config_text(), nl=False)


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


@app.command()
def dev(
    broker_port: int = typer.Option(
        0, help="Port of the bundled broker (0: 9092 if free, else any)."
    ),
) -> None:
    """Run everything on this machine: bundled broker, SQLite, migrations, the three services."""
    from shared.broker import BundledBroker, free_port
    from shared.settings import load_settings

    env = dict(os.environ)
    env.setdefault("LEADFLOW_DEV", "1")
    settings = load_settings(leadflow_dev=True)
    var = Path(settings.leadflow_var_dir)
    var.mkdir(parents=True, exist_ok=True)
    broker: BundledBroker | None = None
    if not settings.kafka_bootstrap_servers:
        port = broker_port or (9092 if _port_free(9092) else free_port())
        broker = BundledBroker(port=port, log_path=var / "broker.log").start()
        env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
        # The local broker has no replicas to wait for: short group timeouts start consumers fast.
        env.setdefault("KAFKA_SESSION_TIMEOUT_MS", "3000")
        env.setdefault("KAFKA_HEARTBEAT_INTERVAL_MS", "300")
        env.setdefault("KAFKA_REBALANCE_TIMEOUT_MS", "3000")
        typer.echo(f"broker    bundled Tansu on {broker.bootstrap} (memory only)")
    env.setdefault("DATABASE_URL", settings.db_url)
    from services.demo import DEV_AD_ENV  # the ad platforms' dev secrets, for `leadflow demo`

    env.update({k: v for k, v in DEV_AD_ENV.items() if k not in env})
    typer.echo(f"database  {env['DATABASE_URL']}")
    subprocess.run([sys.executable, "-m", "services.cli", "migrate"], env=env, check=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in SERVICES:
            procs.append(subprocess.Popen([sys.executable, "-m", "services.cli", name], env=env))
        for name, proc in zip(SERVICES, procs, strict=True):
            port = getattr(settings, f"leadflow_{name}_port")
            _wait_http(f"http://{settings.leadflow_host}:{port}/healthz", proc)
        typer.echo("")
        for name in SERVICES:
            port = getattr(settings, f"leadflow_{name}_port")
            typer.echo(f"{name:<9} http://{settings.leadflow_host}:{port}   (docs: /docs)")
        typer.echo("\nLeadflow is running. Ctrl-C stops everything.")
        _wait_for_signal(procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if broker:
            broker.stop()
        typer.echo("stopped")


@app.command()
def demo(size: int = typer.Option(300, min=1, max=5000, help="How many visitors.")) -> None:
    """A realistic day of traffic through the public endpoints of a running `leadflow dev`."""
    from services.demo import Secrets, Urls, main
    from shared.settings import load_settings

    s = load_settings(leadflow_dev=True)
    urls = [f"http://{s.leadflow_host}:{getattr(s, f'leadflow_{n}_port')}" for n in SERVICES]
    secrets = Secrets(token=s.api_token, write_key=sorted(s.write_keys)[0])
    raise typer.Exit(main(size, Urls(*urls), secrets))


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _wait_for_signal(procs: list[subprocess.Popen[bytes]]) -> None:
    stop = {"now": False}

    def _handler(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    while not stop["now"]:
        for proc in procs:
            if proc.poll() is not None:
                typer.echo(f"a service exited with {proc.returncode}; stopping", err=True)
                return
        time.sleep(0.3)


if __name__ == "__main__":
    app()
