"""Test hosts on one machine: a network namespace each, wired to a bridge by veth pairs.

The bridge sits in a namespace of its own too, so nothing of the machine's own network is
touched: every namespace, link and address is the suite's, named with ``PREFIX`` and a tag
of its own, and removed by ``Network.close`` (also after a failure, and at the start of the
next run if a run was killed). Faults are nftables rules inside a host's namespace, which
drop packets silently, one way or both; deleting the table heals the link.
"""

from __future__ import annotations

import random
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

# Every namespace the suite makes starts with it.
PREFIX = "arh"
FAULT_TABLE = "arh_fault"


def _run(args: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    done = subprocess.run(
        list(args), input=stdin, capture_output=True, text=True, check=False, timeout=30
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _namespaces() -> list[str]:
    return [line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line]


def _remove_namespace(name: str) -> None:
    for pid in _run(["ip", "netns", "pids", name], check=False).split():
        _run(["kill", "-9", pid], check=False)
    _run(["ip", "netns", "delete", name], check=False)


def remove_leftovers() -> None:
    """Namespaces a killed run left behind (deleting one deletes its links)."""
    for name in _namespaces():
        if name.startswith(PREFIX):
            _remove_namespace(name)


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    faulty: bool = False

    def launcher(self) -> list[str]:
        """What runs a command on this host."""
        return ["ip", "netns", "exec", self.namespace]

    def drop(self, peers: Sequence[Host] = (), inbound: bool = True, outbound: bool = True) -> None:
        """Drop this host's packets from and to ``peers`` (all of them, with none), silently:
        no reset, no ICMP, as a lost link does."""
        match = f"ip saddr {{ {', '.join(p.address for p in peers)} }} " if peers else ""
        out_match = f"ip daddr {{ {', '.join(p.address for p in peers)} }} " if peers else ""
        rules = [f"table inet {FAULT_TABLE} {{"]
        if inbound:
            rules += [
                "  chain input {",
                "    type filter hook input priority 0; policy accept;",
                f'    iifname "eth0" {match}drop',
                "  }",
            ]
        if outbound:
            rules += [
                "  chain output {",
                "    type filter hook output priority 0; policy accept;",
                f'    oifname "eth0" {out_match}drop',
                "  }",
            ]
        rules.append("}")
        self.heal()
        _run([*self.launcher(), "nft", "-f", "-"], stdin="\n".join(rules) + "\n")
        self.faulty = True

    def heal(self) -> None:
        _run([*self.launcher(), "nft", "delete", "table", "inet", FAULT_TABLE], check=False)
        self.faulty = False


@dataclass
class Network:
    """A bridge and the hosts on it, in 10.<random>.<random>.0/24."""

    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    hosts: dict[str, Host] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = random.SystemRandom()
        self.subnet = f"10.{rng.randrange(100, 250)}.{rng.randrange(1, 250)}"
        self.switch = f"{PREFIX}{self.tag}-switch"
        _run(["ip", "netns", "add", self.switch])
        _run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.switch, "link", "set", "br0", "up"])

    def add(self, name: str) -> Host:
        index = len(self.hosts) + 2
        namespace = f"{PREFIX}{self.tag}-{name}"
        port = f"port{index}"
        _run(["ip", "netns", "add", namespace])
        _run(
            [
                "ip",
                "-n",
                namespace,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                self.switch,
            ]
        )
        _run(["ip", "-n", self.switch, "link", "set", port, "master", "br0"])
        _run(["ip", "-n", self.switch, "link", "set", port, "up"])
        address = f"{self.subnet}.{index}"
        _run(["ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0"])
        _run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
        _run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        host = Host(name, namespace, address)
        self.hosts[name] = host
        return host

    def heal_all(self) -> None:
        for host in self.hosts.values():
            host.heal()

    def close(self) -> None:
        for host in self.hosts.values():
            _remove_namespace(host.namespace)
        _remove_namespace(self.switch)
        self.hosts.clear()
