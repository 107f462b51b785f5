"""Idle daemon cost: CPU share and RSS of `rotator daemon` holding N secrets with nothing due.

Starts the daemon on a generated manifest (secrets created first by `rotator run`), waits for it to be ready,
then samples /proc/<pid> for ``--seconds`` (default 60): CPU time used over wall time, and resident memory.
Goals (issue 6): < 1 % CPU and < 150 MB RSS with 1,000 secrets. The baseline printed beside it is an idle
`python -c "import time; time.sleep(...)"` so the ratio shows what the scheduler and HTTP thread cost.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, clean_env, print_table, rotator_cmd, workspace, write_manifest

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def _sample(proc: subprocess.Popen[bytes], seconds: float) -> tuple[float, float]:
    """CPU percent and peak RSS (MiB) of ``proc`` over ``seconds``."""
    start_cpu, start = _cpu_seconds(proc.pid), time.monotonic()
    peak = 0.0
    while time.monotonic() - start < seconds:
        peak = max(peak, _rss_mib(proc.pid))
        time.sleep(1)
    used = _cpu_seconds(proc.pid) - start_cpu
    return 100 * used / (time.monotonic() - start), peak


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args(argv)
    with workspace() as root:
        manifest = root / "rotation.yaml"
        write_manifest(manifest, args.n)
        env = clean_env()
        subprocess.run([*rotator_cmd(), "-f", str(manifest), "run"], cwd=root, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = _port()
        daemon = subprocess.Popen([*rotator_cmd(), "-f", str(manifest), "daemon", "--metrics-port", str(port)],
                                  cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        baseline = subprocess.Popen([PYTHON, "-c", f"import time; time.sleep({args.seconds + 120})"])
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200:
                        break
                except OSError:
                    time.sleep(0.5)
            time.sleep(3)  # let start-up work (first reconcile, plan print) settle
            cpu, rss = _sample(daemon, args.seconds)
            base_cpu, base_rss = _cpu_seconds(baseline.pid), _rss_mib(baseline.pid)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
            baseline.kill()
            baseline.wait()
    print_table(["measure", "daemon", "idle python", "goal"], [
        [f"CPU % over {args.seconds:.0f} s ({args.n} secrets)", f"{cpu:.2f}", f"{base_cpu:.2f}s total", "< 1 %"],
        ["peak RSS MiB", f"{rss:.0f}", f"{base_rss:.0f}", "< 150"],
    ], title="idle daemon")
    return {"cpu_percent": cpu, "rss_mib": rss}


if __name__ == "__main__":
    main()
