"""Flume's ``ipFilterRules`` for the avro source: ``allow|deny : ip|name : pattern``, comma-separated, the first
rule that matches a client decides; a client no rule matches is allowed (netty 3's ``IpFilterRuleHandler``).

Patterns are netty's ``PatternRule`` globs: ``*`` is any run of characters, ``?`` one character.  ``ip`` rules match
the client's address as text (``127.0.0.1``, ``::1``); ``name`` rules match its host name, looked up in reverse
DNS only when a name rule is reached; the name pattern ``localhost`` matches every loopback address, as in netty.
Example: ``allow:ip:127.*,allow:name:localhost,deny:ip:*``.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    allow: bool
    kind: str              # "ip" or "name"
    pattern: str
    regex: re.Pattern

    def matches(self, address: str, hostname) -> bool:
        if self.kind == "ip":
            return bool(self.regex.fullmatch(address))
        if self.pattern == "localhost" and _is_loopback(address):
            return True
        name = hostname()
        return name is not None and bool(self.regex.fullmatch(name))


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _glob(pattern: str) -> re.Pattern:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern),
                      re.IGNORECASE)


def parse_rules(text: str) -> list[Rule]:
    """Parse Flume's rule list; raise ValueError naming the bad rule."""
    rules = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        pieces = part.split(":", 2)
        if len(pieces) != 3 or pieces[0].lower() not in ("allow", "deny") or pieces[1].lower() not in ("ip", "name") \
                or not pieces[2]:
            raise ValueError(f"rule '{part}' is not <allow|deny>:<ip|name>:<pattern>")
        rules.append(Rule(pieces[0].lower() == "allow", pieces[1].lower(), pieces[2], _glob(pieces[2])))
    if not rules:
        raise ValueError("no rules")
    return rules


def check_rules(text: str) -> str | None:
    """An option check: None if ``text`` parses, else the reason."""
    try:
        parse_rules(text)
    except ValueError as exc:
        return str(exc)
    return None


def allowed(rules: list[Rule], address: str) -> bool:
    """Whether a client at ``address`` may connect (blocking: a name rule may do a reverse DNS lookup)."""
    looked_up: list = []

    def hostname():
        if not looked_up:
            try:
                looked_up.append(socket.gethostbyaddr(address)[0])
            except OSError:
                looked_up.append(None)
        return looked_up[0]

    for rule in rules:
        if rule.matches(address, hostname):
            return rule.allow
    return True
