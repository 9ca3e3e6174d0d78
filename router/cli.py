"""`turnout serve|check|import-litellm`: the only place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from router.config import Config, ConfigError, load_config

__all__ = ["main", "worker_app"]

EXIT_OK = 0
EXIT_CONFIG = 2
CONFIG_ENV = "TURNOUT_CONFIG"

log = logging.getLogger("turnout")
events = logging.getLogger("turnout.events")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    result: int = args.run(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turnout", description=__doc__)
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", help=f"router.toml (default: ${CONFIG_ENV}, else ./router.toml)")
    serve.add_argument("--host", help="listen address (default: [server] host)")
    serve.add_argument("--port", type=int, help="listen port (default: [server] port)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="validate the config and print the routing table")
    check.add_argument("--config", help=f"router.toml (default: ${CONFIG_ENV}, else ./router.toml)")
    check.set_defaults(run=_check)

    convert = commands.add_parser(
        "import-litellm", help="print the router.toml equivalent of a LiteLLM proxy config.yaml")
    convert.add_argument("path", help="LiteLLM proxy config.yaml")
    convert.set_defaults(run=_import_litellm)
    return parser


def config_path(explicit: str | None) -> str:
    return explicit or os.environ.get(CONFIG_ENV) or "router.toml"


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid configuration ({len(exc.problems)} problems):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    print(f"{path}: OK")
    print(routing_table(config))
    return EXIT_OK


def routing_table(config: Config) -> str:
    """What `turnout check` prints: groups, deployments, fallbacks, cache. No secrets."""
    lines = [f"server: {config.server.host}:{config.server.port}, "
             f"{len(config.server.api_keys)} client key(s), "
             f"admin key {'set' if config.server.admin_key else 'not set'}"]
    r = config.router
    lines.append(f"router: strategy={r.strategy} num_retries={r.num_retries} "
                 f"allowed_fails={r.allowed_fails} cooldown={r.cooldown:g}s "
                 f"timeout={r.timeout:g}s state={r.state} hedge_after={r.hedge_after:g}s")
    lines.append("model groups:")
    for group in config.models:
        lines.append(f"  {group.name}")
        for d in group.deployments:
            where = d.base_url or "built-in"
            limits = ", ".join(f"{k}={v}" for k, v in (("rpm", d.rpm), ("tpm", d.tpm),
                               ("max_concurrency", d.max_concurrency)) if v)
            key = "key set" if d.api_key else "no key"
            lines.append(f"    {d.id}: {d.provider} {d.model or '-'} at {where} "
                         f"weight={d.weight:g} {key}" + (f" {limits}" if limits else ""))
    for title, table in (("fallbacks", config.fallbacks),
                         ("context window fallbacks", config.context_window_fallbacks)):
        if table:
            lines.append(f"{title}:")
            lines += [f"  {src} -> {', '.join(dst)}" for src, dst in table.items()]
    c = config.cache
    lines.append(f"cache: backend={c.backend} mode={c.mode} ttl={c.ttl:g}s scope={c.scope} "
                 f"namespace={c.namespace} coalesce={c.coalesce} "
                 f"stale_if_error={c.stale_if_error:g}s")
    if c.backend == "memory":
        lines.append(f"  memory cache: up to {c.max_entries} entries; with --workers above 1 "
                     "each worker process has its own cache")
    if config.redis is not None:
        lines.append(f"redis: {config.redis.display_url()} timeout={config.redis.timeout:g}s"
                     + (" (cluster)" if config.redis.is_cluster else ""))
    return "\n".join(lines)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    path = os.path.abspath(config_path(args.config))
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    from router.logs import configure_logging
    from router.serving import HTTP_PROTOCOL

    configure_logging(secrets=config.secrets())
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    workers = max(1, args.workers)
    events.info("config loaded from %s: %d model groups", path, len(config.models),
                extra={"event": "config_loaded", "path": path, "groups": len(config.models)})
    if workers > 1 and config.cache.backend == "memory":
        log.info("memory cache with %d workers: each worker has its own cache", workers)
    options: dict[str, Any] = {
        "host": host, "port": port, "loop": _loop(), "http": HTTP_PROTOCOL, "lifespan": "on",
        "access_log": False, "log_level": "warning", "server_header": False,
        "log_config": None,  # router.logs formats uvicorn's records too
        "timeout_graceful_shutdown": config.server.shutdown_grace,
    }
    if workers > 1:
        # uvicorn's supervisor handles the signals: SIGTERM stops the workers gracefully,
        # SIGHUP restarts them, each re-reading $TURNOUT_CONFIG.
        os.environ[CONFIG_ENV] = path
        # A new worker imports everything before it answers; uvicorn's 5 s is short on a
        # busy host, and a worker not ready in time aborts the whole reload.
        with _multiprocess_metrics():
            uvicorn.run("router.cli:worker_app", factory=True, workers=workers,
                        timeout_worker_healthcheck=30, **options)
    else:
        from router.app import create_app
        from router.serving import Server
        from router.tracing import tracing_from_env

        app = create_app(config, tracing=tracing_from_env(os.environ))
        Server(uvicorn.Config(app, **options), app=app, config_path=path).run()
    return EXIT_OK


@contextlib.contextmanager
def _multiprocess_metrics() -> Iterator[None]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for the workers, removed when they have stopped.

    Workers are spawned processes: they import prometheus_client after this is set, which
    is what switches it to multiprocess mode. A directory the operator set is kept as is.
    """
    from router.metrics import MULTIPROC_ENV

    if os.environ.get(MULTIPROC_ENV):
        yield
        return
    made = tempfile.mkdtemp(prefix="turnout-metrics-")
    os.environ[MULTIPROC_ENV] = made
    try:
        yield
    finally:
        shutil.rmtree(made, ignore_errors=True)


def worker_app() -> object:
    """One worker's app under `--workers N`; the config is re-read from $TURNOUT_CONFIG.

    On SIGHUP uvicorn's supervisor starts new workers and retires an old one only once its
    replacement serves: a worker that cannot load the config exits, and the old ones stay.
    """
    from router.app import create_app
    from router.logs import configure_logging
    from router.tracing import tracing_from_env

    path = os.environ[CONFIG_ENV]
    try:
        config = load_config(path)
    except ConfigError as exc:
        configure_logging(secrets=[])
        logging.getLogger("turnout.events").error(
            "config not loaded, this worker exits (running workers keep the old config): "
            "%s: %s", path, "; ".join(exc.problems),
            extra={"event": "config_reload_failed", "path": path, "problems": exc.problems})
        raise SystemExit(EXIT_CONFIG) from None
    configure_logging(secrets=config.secrets())
    return create_app(config, tracing=tracing_from_env(os.environ))


def _import_litellm(args: argparse.Namespace) -> int:
    from router.litellm_import import ImportFailed, convert_file

    try:
        print(convert_file(args.path), end="")
    except ImportFailed as exc:
        print(f"{args.path}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def _loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


if __name__ == "__main__":
    sys.exit(main())
