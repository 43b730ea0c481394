"""Network namespaces for impaired-room tests: LiveKit in a namespace of its own, a learner in
another, and the test's own processes (worker, voice agent) in the root namespace reaching
LiveKit over a veth pair. Every address is a private one on an interface inside a namespace
the test made (the root-side veth ends are the routes in); everything is deleted afterwards.

Impairment is what this kernel can do (see ../shared/ops-tools.md): random loss with nftables
on the namespaces' ingress hooks, and a stall as a drop-everything rule for a while. ``tc
netem`` is not built into this kernel, so delay and jitter are not made here.

    with Namespaces() as ns:
        ns.exec_argv(ns.learner)  # ["ip", "netns", "exec", <name>]
        ns.loss(3)                # 3 % of packets into LiveKit and into the learner
        await ns.stall(0.5)       # nothing passes for 500 ms
"""

from __future__ import annotations

import asyncio
import os
import subprocess


class NamespaceError(RuntimeError):
    pass


def _run(*argv: str, stdin: str | None = None) -> None:
    r = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        raise NamespaceError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")


def available() -> str | None:
    """None if namespaces, veth pairs and nftables work here, else why not."""
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    probe = f"avprobe{os.getpid() % 100000}"
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "netns", "exec", probe, "nft", "list", "tables")
    except (NamespaceError, OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Namespaces:
    """root <-veth-> core (LiveKit) <-veth-> learner, on 10.<a>.<b>.0/30 subnets."""

    def __init__(self) -> None:
        tag = os.getpid() % 10000
        self.core, self.learner = f"avc{tag}", f"avl{tag}"
        self._veth = {"root": f"avr{tag}", "core_r": f"avcr{tag}", "core_l": f"avcl{tag}",
                      "learner": f"avl{tag}"}
        a, b = 100 + tag // 250 % 100, tag % 250
        self.root_ip, self.core_ip = f"10.{a}.{b}.1", f"10.{a}.{b}.2"  # root <-> core
        self.core_learner_ip, self.learner_ip = f"10.{a + 100}.{b}.1", f"10.{a + 100}.{b}.2"
        self._up = False

    def __enter__(self) -> Namespaces:
        try:
            self._make()
        except Exception:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def exec_argv(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def _make(self) -> None:
        v = self._veth
        for ns in (self.core, self.learner):
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        self._up = True
        _run("ip", "link", "add", v["root"], "type", "veth", "peer", "name", v["core_r"],
             "netns", self.core)
        _run("ip", "addr", "add", f"{self.root_ip}/30", "dev", v["root"])
        _run("ip", "link", "set", v["root"], "up")
        _run("ip", "-n", self.core, "addr", "add", f"{self.core_ip}/30", "dev", v["core_r"])
        _run("ip", "-n", self.core, "link", "set", v["core_r"], "up")
        _run("ip", "-n", self.core, "link", "add", v["core_l"], "type", "veth", "peer", "name",
             v["learner"], "netns", self.learner)
        _run("ip", "-n", self.core, "addr", "add", f"{self.core_learner_ip}/30", "dev",
             v["core_l"])
        _run("ip", "-n", self.core, "link", "set", v["core_l"], "up")
        _run("ip", "-n", self.learner, "addr", "add", f"{self.learner_ip}/30", "dev",
             v["learner"])
        _run("ip", "-n", self.learner, "link", "set", v["learner"], "up")
        # the learner reaches LiveKit's root-side address too (a candidate LiveKit may offer)
        _run("ip", "-n", self.learner, "route", "add", "default", "via", self.core_learner_ip)
        _run("ip", "-n", self.core, "route", "add", "default", "via", self.root_ip)

    @property
    def core_interfaces(self) -> list[str]:
        return [self._veth["core_r"], self._veth["core_l"]]

    @staticmethod
    def _rules(dev: str, rule: str) -> str:
        chain = dev.replace("-", "_")
        return (f"table netdev impair_{chain} {{\n chain in {{\n"
                f"  type filter hook ingress device {dev} priority 0; policy accept;\n"
                f"  {rule}\n }}\n}}\n")

    def _apply(self, rule: str | None) -> None:
        for ns, dev in ((self.core, self._veth["core_r"]), (self.core, self._veth["core_l"]),
                        (self.learner, self._veth["learner"])):
            table = f"impair_{dev}"
            subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "netdev", table],
                           capture_output=True)
            if rule:
                _run("ip", "netns", "exec", ns, "nft", "-f", "-",
                     stdin=self._rules(dev, rule))

    def loss(self, percent: int) -> None:
        """Drop ``percent`` % of packets coming into LiveKit (from both sides) and into the
        learner; 0 clears it."""
        self._loss = percent
        self._apply(f"numgen random mod 100 < {percent} drop" if percent else None)

    async def stall(self, seconds: float) -> None:
        """Nothing passes for ``seconds`` (then the loss in force before comes back)."""
        before = getattr(self, "_loss", 0)
        self._apply("drop")
        try:
            await asyncio.sleep(seconds)
        finally:
            self.loss(before)

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self._veth["root"]], capture_output=True)
        if self._up:
            for ns in (self.core, self.learner):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            self._up = False
