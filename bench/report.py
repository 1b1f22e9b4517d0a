"""One command for every bench: writes bench/REPORT.md and its plots (bench/report/*.png).

    .venv/bin/python -m bench.report                  # about 15 minutes: every bench, a 5-minute soak
    .venv/bin/python -m bench.report --quick          # shorter runs and a 1-minute soak, to try it out

What it runs, each in its own process: bench.proxy --pin (the proxy per core, with and without a rate-limit
rule, beside nginx and a naive Starlette proxy), bench.ratelimit_engine, bench.shortener, bench.notifications,
bench.outage (a Redis outage under load) and bench.soak. Every figure is printed beside its baseline from the
same run, as each bench prints it; limiter figures count only if every decision was made (bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench"
PLOTS = OUT / "report"


def run(name: str, argv: list[str], timeout: float) -> str:
    print(f"== {name}: {' '.join(argv)}", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
        text = done.stdout + (f"\n(exit {done.returncode})\n{done.stderr[-2000:]}" if done.returncode else "")
    except subprocess.TimeoutExpired:
        text = f"(did not finish within {timeout:.0f}s)"
    print(f"   {time.monotonic() - started:.0f}s", flush=True)
    return text.strip()


def plot_proxy(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.get("result") and not r.get("invalid") and r["name"] != "direct"]
    names = [r["name"] for r in shown]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.barh(names, [r["result"]["requests_per_s"] for r in shown], color="#4c72b0")
    left.set_xlabel("requests/s, one proxy core")
    left.invert_yaxis()
    p50 = [r["result"]["latency_ms"].get("p50", 0) for r in shown]
    p99 = [r["result"]["latency_ms"].get("p99", 0) for r in shown]
    positions = range(len(shown))
    right.barh([p - 0.2 for p in positions], p50, height=0.4, label="p50")
    right.barh([p + 0.2 for p in positions], p99, height=0.4, label="p99")
    right.set_yticks(list(positions), names)
    right.invert_yaxis()
    right.set_xlabel("latency, ms (50 connections)")
    right.legend()
    figure.suptitle("GET /hello through each proxy, pinned to one core (same run)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_outage(outage: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, height_ratios=[3, 1])
    decided = [(t, ms) for t, ms, made in outage["requests"] if made]
    failed_open = [(t, ms) for t, ms, made in outage["requests"] if not made]
    if decided:
        top.scatter(*zip(*decided, strict=True), s=2, alpha=0.4, label="decided by Redis")
    if failed_open:
        top.scatter(*zip(*failed_open, strict=True), s=2, alpha=0.4, color="#dd8452", label="failed open")
    top.set_yscale("log")
    top.set_ylabel("latency, ms")
    top.axvspan(5, 10, color="grey", alpha=0.15, label="Redis stopped (SIGSTOP)")
    top.legend(loc="upper right", markerscale=5)
    times, states = zip(*outage["breaker"], strict=True) if outage["breaker"] else ((), ())
    bottom.step(times, states, where="post")
    bottom.set_yticks([0, 1, 2], ["closed", "half-open", "open"])
    bottom.set_xlabel("seconds")
    figure.suptitle(
        f"A Redis outage under load: the breaker opened {outage['opened_after_s']} s after the fault "
        f"and closed {outage['closed_after_s']} s after the recovery"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_soak(soak: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = soak["windows"]
    at = [w["at"] for w in windows]
    figure, axes = plt.subplots(2, 2, figsize=(11, 6), sharex=True)
    for axis, key, label in (
        (axes[0][0], "rss_mib", "RSS, MiB"),
        (axes[0][1], "fds", "open file descriptors"),
        (axes[1][0], "p99_ms", "p99 latency, ms"),
        (axes[1][1], "loop_lag_ms", "event-loop lag, ms"),
    ):
        axis.plot(at, [w[key] for w in windows], marker=".")
        axis.set_title(label)
        axis.set_ylim(bottom=0)
    for axis in axes[1]:
        axis.set_xlabel("seconds")
    figure.suptitle(f"Soak at {soak['rate_per_s']:.0f} req/s (half the mix's capacity): {soak['verdict']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs and a 1-minute soak")
    parser.add_argument("--soak-minutes", type=float, help="soak length (default 5, 1 with --quick)")
    args = parser.parse_args()
    PLOTS.mkdir(parents=True, exist_ok=True)
    results = OUT / "results"
    results.mkdir(exist_ok=True)
    duration, repeat = ("4s", "1") if args.quick else ("6s", "5")
    soak_minutes = args.soak_minutes or (1.0 if args.quick else 5.0)

    proxy_json, outage_json, soak_json = results / "proxy.json", results / "outage.json", results / "soak.json"
    sections: dict[str, str] = {}
    sections["proxy"] = run(
        "proxy",
        ["bench.proxy", "--pin", "--duration", duration, "--repeat", repeat, "--json", str(proxy_json),
         "--only", "gateway", "--only", "gateway-rl", "--only", "gateway-rl-redis", "--only", "nginx"],
        timeout=900,
    )  # fmt: skip
    sections["limiter"] = run("ratelimit_engine", ["bench.ratelimit_engine", "--duration", "3"], timeout=600)
    sections["shortener"] = run("shortener", ["bench.shortener", "--duration", duration], timeout=900)
    sections["notifications"] = run("notifications", ["bench.notifications"], timeout=900)
    sections["outage"] = run("outage", ["bench.outage", "--json", str(outage_json)], timeout=120)
    sections["soak"] = run(
        "soak",
        ["bench.soak", "--minutes", str(soak_minutes), "--json", str(soak_json)],
        timeout=soak_minutes * 60 + 300,
    )

    plots = []
    if proxy_json.exists():
        plot_proxy(json.loads(proxy_json.read_text())["rows"], PLOTS / "proxy.png")
        plots.append(("The proxy per core", "report/proxy.png"))
    if outage_json.exists():
        plot_outage(json.loads(outage_json.read_text()), PLOTS / "outage.png")
        plots.append(("A Redis outage under load", "report/outage.png"))
    if soak_json.exists():
        plot_soak(json.loads(soak_json.read_text()), PLOTS / "soak.png")
        plots.append(("The soak", "report/soak.png"))

    lines = [
        "# Bench report",
        "",
        f"Written by `python -m bench.report{' --quick' if args.quick else ''}` on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, Python {platform.python_version()}, "
        f"{platform.machine()}. Each figure stands beside its baseline from the same run; only ratios within a run "
        "compare (this machine's speed moves from day to day).",
        "",
    ]
    for title, image in plots:
        lines += [f"## {title}", "", f"![{title}]({image})", ""]
    for name, text in sections.items():
        lines += [f"## `bench.{'ratelimit_engine' if name == 'limiter' else name}` output", "", "```", text, "```", ""]
    (OUT / "REPORT.md").write_text("\n".join(lines))
    print(f"wrote {OUT / 'REPORT.md'} and {len(plots)} plots in {PLOTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
