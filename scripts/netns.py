"""Network namespaces for impaired-room tests: LiveKit in a namespace of its own, a learner in
another, and the test's own processes (worker, voice agent) in the root namespace reaching
LiveKit over a veth pair. Every address is a private one on an interface inside a namespace
the test made (the root-side veth ends are the routes in); everything is deleted afterwards.

Impairment is what this kernel can do (see ../shared/ops-tools.md): random loss with nftables
on the namespaces' ingress hooks, a stall as a drop-everything rule for a while, and delay with
jitter through NFQUEUE (iptables in the namespace, :mod:`scripts.netns_delay` holding packets in
userspace), since ``tc netem`` is not built into this kernel.

    with Namespaces() as ns:
        ns.exec_argv(ns.learner)  # ["ip", "netns", "exec", <name>]
        ns.loss(3)                # 3 % of packets into LiveKit and into the learner
        await ns.stall(0.5)       # nothing passes for 500 ms
        with ns.delay(60, 30):    # 60 ms + jitter into LiveKit and into the learner
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


def delay_available() -> str | None:
    """None if :meth:`Namespaces.delay` works here (netfilterqueue built, iptables' NFQUEUE
    target in a namespace), else why not."""
    try:
        import netfilterqueue  # noqa: F401  (only imported to see that it is there)
    except ImportError as exc:
        return f"netfilterqueue is not installed ({exc}; scripts/setup.sh builds it)"
    probe = f"avdprobe{os.getpid() % 100000}"
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "netns", "exec", probe, "iptables", "-A", "INPUT", "-p", "udp", "-j",
             "NFQUEUE", "--queue-num", "1", "--queue-bypass")
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

    @contextlib.contextmanager
    def delay(self, delay_ms: float, jitter_ms: float, seed: int = 0):
        """UDP into LiveKit from the root side (the voice agent's and the worker's media) and
        into the learner waits ``delay_ms`` plus a half-normal jitter of scale ``jitter_ms``
        (:mod:`scripts.netns_delay` behind an NFQUEUE rule in each namespace), in order.
        Yields a dict that holds, after the block, each delayer's summary by namespace."""
        sites = ((self.core, self._veth["core_r"], 11), (self.learner, self._veth["learner"], 12))
        procs, rules, summary = {}, [], {}
        try:
            for k, (ns, dev, queue) in enumerate(sites):
                proc = subprocess.Popen(
                    [*self.exec_argv(ns), sys.executable, "-m", "scripts.netns_delay",
                     str(queue), str(delay_ms), str(jitter_ms), str(seed + k)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                procs[ns] = proc
                ready = proc.stdout.readline()
                if '"ready"' not in ready:
                    raise NamespaceError(f"netns_delay in {ns}: {ready}{proc.stderr.read()}")
                rule = ["INPUT", "-i", dev, "-p", "udp", "-j", "NFQUEUE", "--queue-num",
                        str(queue), "--queue-bypass"]
                _run(*self.exec_argv(ns), "iptables", "-A", *rule)
                rules.append((ns, rule))
            yield summary
        finally:
            for ns, rule in rules:
                subprocess.run([*self.exec_argv(ns), "iptables", "-D", *rule],
                               capture_output=True)
            for ns, proc in procs.items():
                proc.terminate()
                try:
                    out, _ = proc.communicate(timeout=10)
                    summary[ns] = json.loads(out.strip().splitlines()[-1])
                except (subprocess.TimeoutExpired, ValueError, IndexError):
                    proc.kill()

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self._veth["root"]], capture_output=True)
        if self._up:
            for ns in (self.core, self.learner):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            self._up = False
