"""``host``: Flume's HostInterceptor, this machine's IP address or host name in a header.

Properties, as in Flume: ``hostHeader`` (``host``), ``useIP`` (true: the address, else the canonical host name)
and ``preserveExisting`` (false).  The value is found once, when the interceptor is built, as Java's
``InetAddress.getLocalHost()`` finds it: the host name resolved by the system resolver, IPv4 first, or the
loopback address when the host name is ``localhost``; ``getHostAddress()`` writes IPv6 without ``::``
compression; ``getCanonicalHostName()`` is the reverse lookup if it resolves back to the address, else the
address.  If the host name cannot be resolved, Flume logs a warning and sets no header; so does Flumery.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass

from core.event import Event
from core.options import opt
from workers.interceptors.base import HeaderInterceptor, InterceptorContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostConfig:
    host_header: str = opt("hostHeader", "host", doc="the header that receives the host")
    use_ip: bool = opt("useIP", True, doc="the IP address (true) or the canonical host name (false)")
    preserve_existing: bool = opt("preserveExisting", False, doc="keep the header if the event already has it")


def java_host_address(address: str) -> str:
    """An address as Java's ``getHostAddress()`` writes it (IPv6: eight groups, no zero compression)."""
    plain, percent, scope = address.partition("%")
    ip = ipaddress.ip_address(plain)
    if ip.version == 4:
        return str(ip)
    groups = ":".join(format(int(group, 16), "x") for group in ip.exploded.split(":"))
    return groups + percent + scope


def _addresses(name: str) -> list[str]:
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    found = list(dict.fromkeys(info[4][0] for info in infos))
    # Java (java.net.preferIPv6Addresses=false) lists IPv4 addresses first.
    return [a for a in found if ":" not in a] + [a for a in found if ":" in a]


def local_address() -> str | None:
    """The address Java's ``InetAddress.getLocalHost()`` returns, or None when the host name does not resolve."""
    name = socket.gethostname()
    if name == "localhost":
        return "127.0.0.1"
    try:
        return _addresses(name)[0]
    except (OSError, IndexError) as exc:
        log.warning("host interceptor: could not resolve the local host name %r (%s); no header will be set",
                    name, exc)
        return None


def canonical_name(address: str) -> str:
    """Java's ``getCanonicalHostName()``: the reverse lookup, if it resolves back to ``address``."""
    try:
        name = socket.gethostbyaddr(address)[0]
        if address in _addresses(name):
            return name
    except OSError:
        pass
    return address


class HostInterceptor(HeaderInterceptor):
    Config = HostConfig

    def __init__(self, name: str, config: HostConfig, context: InterceptorContext):
        super().__init__(name, config, context)
        address = local_address()
        if address is None:
            self.host = None
        elif config.use_ip:
            self.host = java_host_address(address)
        else:
            self.host = canonical_name(address)

    @property
    def header(self) -> str:
        return self.config.host_header

    def value(self, event: Event) -> str | None:
        return self.host
