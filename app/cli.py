"""The ``flumery`` command.

    flumery agent    -f FILE -n NAME [--data-dir DIR] [--broker-url URL] [--role all|sources|sinks]
                     [--metrics-port N] [--metrics-bind ADDR] [--log-level INFO] [--stats-interval 60]
                     [--reload-interval 30] [--sink-workers auto|per-sink|one|N]
    flumery validate -f FILE -n NAME
    flumery dlq      list|replay|purge -f FILE -n NAME [--limit N] [--channel C] [--json] [--yes]
    flumery worker   -f FILE -n NAME [--broker-url URL] [--sinks k1,g1] [--log-level INFO] [celery worker options]
    flumery flower   -f FILE -n NAME [--broker-url URL] [flower options, e.g. --port=5555]
    flumery --version

``worker`` and ``flower`` validate the agent file, then become Celery's ``worker`` (one take transaction at a
time, named ``<sinks>@<agent>.<host>`` as the agent names its own workers) and ``flower`` on Flumery's app: what the
Procfile runs.  Like the agent's own workers, they are started so that nothing is imported from the working
directory (see :mod:`app.worker`).

Flume's own spellings are accepted too: ``--conf-file``, ``--name``, ``-c/--conf DIR`` (ignored: Flumery has no
flume-env.sh or log4j file), and ``-Dflume.monitoring.type=http -Dflume.monitoring.port=N``; Flumery adds
``-Dflume.monitoring.bind=ADDR`` (same as ``--metrics-bind``; default 0.0.0.0, every interface, as Flume).
Exit status: 0 on success and on a clean stop, 2 for an invalid configuration, command line or setting, 1
otherwise (a broker that refuses the password or the certificate is one line and status 1).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import metadata
from pathlib import Path

from app import dlq, malloc
from app.agent import Agent
from app.worker import BOOTSTRAP, pool_options
from app.worker_layout import parse_layout
from core import options
from core.config import AgentConfig, load_agent
from core.errors import BrokerRefused, ConfigFileUnreadable, ConfigInvalid, SettingsError
from core.settings import Settings
from workers.runtime import served_units

EXIT_INVALID = 2
EXIT_BROKEN_PIPE = 128 + 13       # what a shell reports for a command that a closed pipe (SIGPIPE) ended


def version() -> str:
    try:
        return metadata.version("flumery")
    except metadata.PackageNotFoundError:         # run from a checkout that was never installed
        return "unknown (not installed)"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--conf-file", required=True, help="the Flume agent file")
    parser.add_argument("-n", "--name", required=True, help="the agent to run (files may hold several)")
    parser.add_argument("-c", "--conf", help="accepted for Flume compatibility; not used")
    parser.add_argument("-D", dest="defines", action="append", default=[], metavar="PROP=VALUE",
                        help="Flume system properties: flume.monitoring.type=http, flume.monitoring.port=N, "
                             "flume.monitoring.bind=ADDR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flumery", description="Apache Flume agents on Celery + Redis")
    parser.add_argument("--version", action="version", version=f"flumery {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    agent = sub.add_parser("agent", help="run an agent")
    _common(agent)
    agent.add_argument("--data-dir", help="embedded broker and state (default ~/.flumery/<agent>)")
    agent.add_argument("--broker-url", help="Redis URL (default: $FLUMERY_BROKER_URL, $REDIS_URL, else embedded)")
    agent.add_argument("--role", choices=("all", "sources", "sinks"), default="all",
                       help="run sources, sink workers, or both (default)")
    agent.add_argument("--metrics-port", type=int, help="serve Flume's monitoring JSON at /metrics on this port")
    agent.add_argument("--metrics-bind", help="address the metrics server listens on (default 0.0.0.0, as Flume; "
                                              "127.0.0.1 keeps it on this host)")
    agent.add_argument("--log-level", default="INFO",
                       help="DEBUG (every task and put too), INFO (start, stop, errors, throughput), WARNING, ERROR")
    agent.add_argument("--stats-interval", type=float, default=60.0, metavar="SECONDS",
                       help="log the events each component moved every SECONDS (default 60; 0: never)")
    agent.add_argument("--reload-interval", type=float, default=30.0, metavar="SECONDS",
                       help="look for changes to the agent file this often, as Flume does (default 30; 0: only "
                            "on SIGHUP); a valid new file replaces only the components that changed")
    agent.add_argument("--sink-workers", type=_sink_workers, default="auto", metavar="auto|per-sink|one|N",
                       help="how many worker processes run the sinks: per-sink, one worker process per sink or "
                            "sink group; one, a single process for all, a thread each (less CPU and memory, but "
                            "a crash or a reload of one restarts all); N, at most N processes sharing them out; "
                            "auto (default): per-sink while there is a core for each beside one for the sources, "
                            "else as many processes as cores less one")
    validate = sub.add_parser("validate", help="check an agent file and summarise the flow")
    _common(validate)
    dlq = sub.add_parser("dlq", help="list, replay or purge the agent's dead letters")
    dlq.add_argument("action", choices=("list", "replay", "purge"))
    _common(dlq)
    dlq.add_argument("--data-dir", help="the agent's data dir (to find or start its embedded broker)")
    dlq.add_argument("--broker-url", help="Redis URL (default: $FLUMERY_BROKER_URL, $REDIS_URL, else embedded)")
    dlq.add_argument("--limit", type=int, help="list: how many (default 20); replay: at most this many")
    dlq.add_argument("--channel", help="replay: put every event into this channel instead of its own")
    dlq.add_argument("--json", action="store_true", help="list: one JSON object per line")
    dlq.add_argument("--yes", action="store_true", help="purge: really delete")
    worker = sub.add_parser("worker", help="run a Celery sink worker for the agent's sinks (other options go to "
                                           "celery worker)")
    _conf_file(worker)
    worker.add_argument("--broker-url", help="Redis URL (default: $FLUMERY_BROKER_URL, $REDIS_URL)")
    worker.add_argument("--sinks", help="comma-separated sinks or sink groups to serve (default: $FLUMERY_SINKS, "
                                        "else all)")
    worker.add_argument("--log-level", default="INFO", help="DEBUG (shows every task), INFO, WARNING, ERROR")
    flower = sub.add_parser("flower", help="run Flower on the agent's broker (other options go to flower)")
    _conf_file(flower)
    flower.add_argument("--broker-url", help="Redis URL (default: $FLUMERY_BROKER_URL, $REDIS_URL)")
    return parser


def _conf_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--conf-file", required=True, help="the Flume agent file")
    parser.add_argument("-n", "--name", required=True, help="the agent (files may hold several)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in CELERY_COMMANDS:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = run_celery(args, extra) if args.command in CELERY_COMMANDS else _dispatch(args)
        sys.stdout.flush()                        # here, so that a closed pipe is caught below
        return code
    except BrokenPipeError:
        # The reader went away (``flumery dlq list | head -1``): stop quietly, as a command killed by SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _dispatch(args) -> int:
    if args.command == "validate":
        return validate(args)
    if args.command == "dlq":
        return run_dlq(args)
    return run_agent(args)


def _load(args) -> AgentConfig | None:
    try:
        return load_agent(args.conf_file, args.name)
    except ConfigFileUnreadable as exc:
        print(f"flumery: {exc}", file=sys.stderr)
        return None
    except ConfigInvalid as exc:
        print(f"flumery: {args.conf_file}: agent '{args.name}' is not valid "
              f"({len(exc.errors)} error{'s' if len(exc.errors) != 1 else ''}):", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        for notice in exc.notices:
            print(f"  note: {notice}", file=sys.stderr)
        return None


def validate(args) -> int:
    config = _load(args)
    if config is None:
        return EXIT_INVALID
    print(summary(config))
    return 0


def summary(config: AgentConfig) -> str:
    lines = [f"agent '{config.name}' in {config.file}: valid"]
    if config.sources:
        lines.append("  sources:")
    for s in config.sources.values():
        routing = s.selector.type
        lines.append(f"    {s.name:<14} {s.type:<10} {_settings(s, config)}")
        interceptors = " ".join(i.name for i in s.interceptors)
        lines.append(f"    {'':<14} -> {' '.join(s.channels)} ({routing})"
                     + (f", interceptors: {interceptors}" if interceptors else ""))
    lines.append("  channels:")
    for c in config.channels.values():
        lines.append(f"    {c.name:<14} {c.type:<10} capacity={c.config.capacity} "
                     f"transactionCapacity={c.config.transaction_capacity}")
    if config.sinks:
        lines.append("  sinks:")
    for k in config.sinks.values():
        lines.append(f"    {k.name:<14} {k.type:<10} <- {k.channel}  {_settings(k, config)}")
    for g in config.sinkgroups.values():
        lines.append(f"  sink group {g.name}: {g.processor.type} over {' '.join(g.sinks)}")
    for notice in config.notices:
        lines.append(f"  note: {notice}")
    # Values from ${env:VAR} may be secrets: shown masked (each setting is also masked as its own key below).
    return "\n".join(config.mask(line) for line in lines)


def _settings(component, agent: AgentConfig) -> str:
    """The component's settings that differ from their defaults, as ``key=value``, values from the environment
    masked."""
    config = component.config
    shown = []
    for key, default, _ in options.describe(type(config)):
        for f in config.__dataclass_fields__.values():
            if f.metadata.get("key") == key and not f.metadata.get("inert"):
                value = getattr(config, f.name)
                if isinstance(value, dict):           # "filegroups.*": one key=value per entry, as in the file
                    shown += [_shown(agent, f"{component.key}.{key[:-1]}{k}", f"{key[:-1]}{k}", v)
                              for k, v in value.items()]
                    continue
                if isinstance(value, list):
                    value = " ".join(value)
                elif isinstance(value, bool):
                    value = str(value).lower()
                if str(value) != default and value != "":
                    shown.append(_shown(agent, f"{component.key}.{key}", key, value))
    return " ".join(shown)


def _shown(agent: AgentConfig, full_key: str, key: str, value) -> str:
    """``key=value``, the value as it came from the file where it came from the environment."""
    own = agent.from_env.get(full_key)
    text = own.shown if own and own.value == str(value) else agent.mask(str(value), full_key)
    return f"{key}={text}"


def _sink_workers(text: str) -> str | int:
    """argparse type of ``--sink-workers``: its ValueError message becomes the usage error."""
    try:
        return parse_layout(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--sink-workers: ")) from None


def _metrics_bind(args) -> str:
    props = dict(d.partition("=")[::2] for d in args.defines)
    return args.metrics_bind or props.get("flume.monitoring.bind") or "0.0.0.0"


def _metrics_port(args) -> tuple[int | None, list[str]]:
    port, problems = args.metrics_port, []
    props = dict(d.partition("=")[::2] for d in args.defines)
    if props.get("flume.monitoring.type", "http") != "http":
        problems.append(f"-Dflume.monitoring.type={props['flume.monitoring.type']}: only http is supported")
    if "flume.monitoring.port" in props and port is None:
        try:
            port = int(props["flume.monitoring.port"])
        except ValueError:
            problems.append(f"-Dflume.monitoring.port={props['flume.monitoring.port']}: expected a port number")
    elif props.get("flume.monitoring.type") == "http" and port is None:
        port = 41414                      # Flume's default monitoring port
    return port, problems


def run_dlq(args) -> int:
    config = _load(args)
    if config is None:
        return EXIT_INVALID
    if args.action == "list" and args.limit is None:
        args.limit = 20
    settings = Settings.from_env().with_(conf_file=str(Path(args.conf_file).resolve()), agent=args.name,
                                         data_dir=args.data_dir, broker_url=args.broker_url)
    try:
        return dlq.run(args, config, settings)
    except SettingsError as exc:
        print(f"flumery: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (RuntimeError, BrokerRefused) as exc:
        print(f"flumery: {exc}", file=sys.stderr)
        return 1


CELERY_COMMANDS = ("worker", "flower")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def worker_name(config: AgentConfig, sinks: tuple[str, ...], environ) -> str:
    """``<sinks>@<agent>.<host>`` as the agent names its workers (``k1@a1.host``; several units joined by
    ``+``), with the process of a Procfile runner (``DYNO`` on Heroku, ``HONCHO_PROCESS_NAME`` under honcho,
    e.g. ``sinks.2``) before the host so that scaled workers on one host have different names."""
    units = sinks or tuple(unit for unit, _ in config.sink_units())
    process = environ.get("DYNO") or environ.get("HONCHO_PROCESS_NAME")
    return f"{'+'.join(units)}@{config.name}." + (f"{process}." if process else "") + "%h"


FLOWER_AUTH_ENV = ("FLOWER_BASIC_AUTH", "FLOWER_AUTH_PROVIDER")
FLOWER_AUTH_OPTIONS = ("--basic-auth", "--basic_auth", "--auth-provider", "--auth_provider")


def flower_auth_problem(extra: list[str], environ) -> str | None:
    """Why ``flumery flower`` must not start: Flower can shut workers down and shows every task's arguments, so
    it runs only behind its basic auth or OAuth, unless FLUMERY_FLOWER_NO_AUTH=1 says it is protected otherwise
    (a reverse proxy with its own authentication, a port reachable only from the host)."""
    if environ.get("FLUMERY_FLOWER_NO_AUTH") == "1":
        return None
    if any(environ.get(name) for name in FLOWER_AUTH_ENV):
        return None
    if any(arg.split("=", 1)[0] in FLOWER_AUTH_OPTIONS for arg in extra):
        return None
    return ("Flower would run without authentication, and it can shut workers down: set FLOWER_BASIC_AUTH="
            "user:password (or Flower's OAuth settings, FLOWER_AUTH_PROVIDER and FLOWER_AUTH), or "
            "FLUMERY_FLOWER_NO_AUTH=1 if something else protects it")


def run_celery(args, extra: list[str]) -> int:
    """``flumery worker|flower``: check the agent file, then replace this process by Celery's command."""
    config = _load(args)
    if config is None:
        return EXIT_INVALID
    sinks = tuple(s.strip() for s in (getattr(args, "sinks", None) or "").split(",") if s.strip()) or None
    settings = Settings.from_env().with_(conf_file=str(Path(args.conf_file).resolve()), agent=args.name,
                                         broker_url=args.broker_url, sinks=sinks)
    if not settings.broker_url:
        print(f"flumery {args.command}: give the broker: --broker-url, FLUMERY_BROKER_URL or REDIS_URL",
              file=sys.stderr)
        return EXIT_INVALID
    problem = flower_auth_problem(extra, os.environ) if args.command == "flower" else None
    if problem:
        print(f"flumery flower: {problem}", file=sys.stderr)
        return EXIT_INVALID
    if args.command == "worker" and not config.sinks:
        print(f"flumery worker: agent '{config.name}' has no sinks to serve", file=sys.stderr)
        return EXIT_INVALID
    env = {**os.environ, **settings.env()}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    if args.command == "worker":
        try:
            units = served_units(settings, config)
        except SettingsError as exc:        # --sinks names a sink the agent has not
            print(f"flumery worker: {exc}", file=sys.stderr)
            return EXIT_INVALID
        # A --pool given among the Celery options comes later and wins.
        command = ["worker", *pool_options(len(units)), "--hostname", worker_name(config, settings.sinks, os.environ),
                   "--loglevel", args.log_level.upper(), "--without-gossip", "--without-mingle", *extra]
    else:
        command = ["flower", *extra]
    sys.stdout.flush()
    # Not `python -m celery -A app`: that imports from the working directory first (see app.worker).
    os.execve(sys.executable, [sys.executable, "-c", BOOTSTRAP, *command], env)
    return 1                               # not reached: execve replaces this process or raises


def run_agent(args) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = _load(args)
    if config is None:
        return EXIT_INVALID
    port, problems = _metrics_port(args)
    if problems:
        for problem in problems:
            print(f"flumery: {problem}", file=sys.stderr)
        return EXIT_INVALID
    settings = Settings.from_env().with_(conf_file=str(Path(args.conf_file).resolve()), agent=args.name, data_dir=args.data_dir,
                                         broker_url=args.broker_url)
    malloc.keep_batch_buffers()       # the sources' puts: see app/malloc.py
    for notice in config.notices:
        logging.getLogger("flumery").info("note: %s", notice)
    agent = Agent(config, settings, role=args.role, metrics_port=port, worker_log_level=args.log_level.upper(),
                  stats_interval_s=args.stats_interval, reload_interval_s=args.reload_interval,
                  metrics_bind=_metrics_bind(args), sink_workers=args.sink_workers)
    try:
        return agent.run()
    except SettingsError as exc:
        print(f"flumery: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (RuntimeError, BrokerRefused) as exc:
        print(f"flumery: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
