"""Load on `jumok serve` over loopback: requests/s and p50/p99 latency at 1, 8 and 32 clients,
dynamic batching on and off in the same run, next to the offline batched decoding speed.

Each client sends one sentence per request (greedy unless --beam), waits for the answer, and sends
the next, until --requests requests are done or --seconds pass at that concurrency. The server is
started by this script on a free 127.0.0.1 port and stopped after each setting.

    python benchmarks/serve_load.py --run runs/m30k --src ../shared/data/multi30k/test2016.en
    python benchmarks/serve_load.py --run runs/date            # dates generated here

Prints a table and writes one JSON line per result to --jsonl (default serve_load.jsonl).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, batching: bool, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "jumok", "serve", str(run), "--port", str(port)]
    command += ["--batching" if batching else "--no-batching", "--log-level", "warning", *extra]
    process = subprocess.Popen(command)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=2) as r:
                if json.loads(r.read())["ready"]:
                    return process, base
        except OSError:
            time.sleep(0.2)
        if process.poll() is not None:
            break
    process.kill()
    raise SystemExit(f"jumok serve did not become ready: {' '.join(command)}")


async def load(base: str, sentences: list[str], clients: int, requests: int, seconds: float, beam):
    latencies: list[float] = []
    errors: list[str] = []
    next_index = 0
    stop_at = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < requests and time.monotonic() < stop_at:
            text = sentences[next_index % len(sentences)]
            next_index += 1
            started = time.perf_counter()
            try:
                r = await http.post("/v1/translate", json={"texts": [text], "beam": beam})
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
            except httpx.HTTPError as err:
                errors.append(repr(err))
                continue
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as http:
        began = time.perf_counter()
        await asyncio.gather(*[client(http) for _ in range(clients)])
        wall = time.perf_counter() - began
    return latencies, errors, wall


def read_sentences(src: Path | None, seed: int) -> list[str]:
    """The non-blank lines of ``src``, or 2,000 generated dates."""
    if src:
        return [s for s in src.read_text(encoding="utf-8").splitlines() if s.strip()]
    from jumok.data.synthetic import generate

    return [source for source, _ in generate("date", 2000, seed=seed)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def offline(run: Path, sentences: list[str], beam: int) -> float:
    """Sentences per second of jumok.load(run).translate on all sentences, batch 64."""
    import jumok

    model = jumok.load(run)
    model.translate(sentences[:64], batch_size=64, beam=beam)  # warm-up
    started = time.perf_counter()
    model.translate(sentences, batch_size=64, beam=beam)
    return len(sentences) / (time.perf_counter() - started)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="run directory to serve")
    p.add_argument("--src", type=Path, help="sentences, one per line (default: generated dates)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=1000, help="requests per setting (at most)")
    p.add_argument("--seconds", type=float, default=60, help="time per setting (at most)")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--serve-arg", action="append", default=[], help="extra `jumok serve` flag")
    p.add_argument("--jsonl", type=Path, default=Path("serve_load.jsonl"))
    args = p.parse_args()

    sentences = read_sentences(args.src, seed=123)[: args.requests]

    rows = []
    rate = offline(args.run, sentences, args.beam)
    rows.append({"setting": "offline translate, batch 64", "clients": None, "rps": rate})
    for batching in (True, False):
        process, base = start_server(args.run, batching, args.serve_arg)
        try:
            asyncio.run(load(base, sentences[:32], 8, 32, 30, args.beam))  # warm-up
            for clients in args.clients:
                lat, errors, wall = asyncio.run(
                    load(base, sentences, clients, args.requests, args.seconds, args.beam)
                )
                rows.append(
                    {
                        "setting": f"serve, batching {'on' if batching else 'off'}",
                        "clients": clients,
                        "requests": len(lat),
                        "errors": len(errors),
                        "first_error": errors[0] if errors else None,
                        "rps": len(lat) / wall,
                        "p50_ms": 1000 * statistics.median(lat) if lat else None,
                        "p99_ms": 1000 * percentile(lat, 99) if lat else None,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)

    stamp = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "run": str(args.run),
        "beam": args.beam,
    }
    with args.jsonl.open("a", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps({**stamp, **row}) + "\n")
    print(
        f"\n{'setting':<28} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
    )
    for r in rows:
        p50 = f"{r['p50_ms']:.1f}" if r.get("p50_ms") else "-"
        p99 = f"{r['p99_ms']:.1f}" if r.get("p99_ms") else "-"
        clients = r["clients"] or "-"
        print(
            f"{r['setting']:<28} {clients:>7} {r['rps']:>8.1f} {p50:>8} {p99:>8} "
            f"{r.get('errors', 0):>6}"
        )
    print(f"(offline = sentences/s of jumok.load(RUN).translate; wrote {args.jsonl})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
