"""Where Redis is, when Sentinel says: ``sentinel://[:password@]host:port[,host:port...]/db?master=name``.

One URL names the Sentinels to ask and the master they watch, for the state store and, in
kombu's own spelling (``as_kombu``), for Celery's broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

SCHEME = "sentinel"


@dataclass(frozen=True)
class SentinelAddress:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    password: str | None = None

    def as_kombu(self) -> tuple[str, dict[str, str]]:
        """The broker URL kombu's sentinel transport reads, and its transport options."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        url = ";".join(f"sentinel://{auth}{host}:{port}/{self.db}" for host, port in self.sentinels)
        return url, {"master_name": self.master}


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SCHEME + "://")


def parse_sentinel_url(url: str) -> SentinelAddress:
    """Raises ValueError, saying what is wrong, for a URL that names no usable Sentinel."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise ValueError(f"not a {SCHEME}:// URL")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    password = unquote(userinfo.partition(":")[2]) or None
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"each Sentinel must be host:port, got {item.strip()!r}")
        sentinels.append((host, int(port)))
    master = dict(parse_qsl(parts.query)).get("master", "")
    if not master:
        raise ValueError("?master=<name> must name the master the Sentinels watch")
    database = parts.path.strip("/") or "0"
    if not database.isdigit():
        raise ValueError(f"the database must be a number, got {database!r}")
    return SentinelAddress(tuple(sentinels), master, int(database), password)


def cluster_requested(url: str) -> bool:
    """Whether ``url`` asks for a Redis Cluster client (``?cluster=yes``, ``true`` or ``1``)."""
    value = dict(parse_qsl(urlsplit(url).query)).get("cluster", "")
    return value.lower() in ("yes", "true", "1")
