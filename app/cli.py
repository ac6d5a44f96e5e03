"""The ``flumery`` command.

    flumery agent    -f FILE -n NAME [--data-dir DIR] [--broker-url URL] [--role all|sources|sinks]
                     [--metrics-port N] [--metrics-bind ADDR]
    flumery validate -f FILE -n NAME
    flumery dlq      list|replay|purge -f FILE -n NAME [--limit N] [--channel C] [--json] [--yes]

Flume's own spellings are accepted too: ``--conf-file``, ``--name``, ``-c/--conf DIR`` (ignored: Flumery has no
flume-env.sh or log4j file), and ``-Dflume.monitoring.type=http -Dflume.monitoring.port=N``; Flumery adds
``-Dflume.monitoring.bind=ADDR`` (same as ``--metrics-bind``; default 0.0.0.0, every interface, as Flume).
Exit status: 0 on success and on a clean stop, 2 for an invalid configuration, command line or setting, 1
otherwise (a broker that refuses the password or the certificate is one line and status 1).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from core.errors import BrokerRefused, ConfigInvalid, SettingsError
from core import options
from core.config import AgentConfig, load_agent
from core.settings import Settings

EXIT_INVALID = 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--conf-file", required=True, help="the Flume agent file")
    parser.add_argument("-n", "--name", required=True, help="the agent to run (files may hold several)")
    parser.add_argument("-c", "--conf", help="accepted for Flume compatibility; not used")
    parser.add_argument("-D", dest="defines", action="append", default=[], metavar="PROP=VALUE",
                        help="Flume system properties: flume.monitoring.type=http, flume.monitoring.port=N, "
                             "flume.monitoring.bind=ADDR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flumery", description="Apache Flume agents on Celery + Redis")
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
    agent.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "validate":
        return validate(args)
    if args.command == "dlq":
        return run_dlq(args)
    return run_agent(args)


def _load(args) -> AgentConfig | None:
    try:
        return load_agent(args.conf_file, args.name)
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
                if isinstance(value, list):
                    value = " ".join(value)
                elif isinstance(value, bool):
                    value = str(value).lower()
                if str(value) != default and value not in ({}, ""):
                    full_key = f"{component.key}.{key}"
                    own = agent.from_env.get(full_key)
                    text = own.shown if own and own.value == str(value) else agent.mask(str(value), full_key)
                    shown.append(f"{key}={text}")
    return " ".join(shown)


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
    from app import dlq

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


def run_agent(args) -> int:
    from app.agent import Agent

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
    for notice in config.notices:
        logging.getLogger("flumery").info("note: %s", notice)
    agent = Agent(config, settings, role=args.role, metrics_port=port, worker_log_level=args.log_level.upper(),
                  metrics_bind=_metrics_bind(args))
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
