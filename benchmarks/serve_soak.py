"""Soak `jumok serve`: moderate load for --minutes, the server's memory sampled all along.

A few clients send one or a few sentences each (beam and n-best mixed, attention on for some),
with pauses, and now and then a client hangs up mid-request. The server's resident memory
(VmRSS of its process) is read every --every seconds. The result compares the median RSS of the
first and the last tenth of the run: a leak shows as steady growth, not as the warm-up step.

    python benchmarks/serve_soak.py --run runs/m30k --src ../shared/data/multi30k/test2016.en

Prints the samples and a summary, and appends a JSON line to --jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import read_sentences, start_server  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def soak(base, port, pid, sentences, minutes, every, clients):
    stop_at = time.monotonic() + minutes * 60
    samples: list[tuple[float, float]] = []
    counts = {"ok": 0, "errors": 0, "hangups": 0}
    started = time.monotonic()
    rng = random.Random(0)

    async def client(http: httpx.AsyncClient, seed: int) -> None:
        r = random.Random(seed)
        while time.monotonic() < stop_at:
            texts = r.sample(sentences, r.choice([1, 1, 2, 4]))
            beam = r.choice([1, 1, 3, 5])
            body = {
                "texts": texts,
                "beam": beam,
                "n_best": min(beam, 2),
                "attention": r.random() < 0.3,
            }
            try:
                response = await http.post("/v1/translate", json=body)
                counts["ok" if response.status_code == 200 else "errors"] += 1
            except httpx.HTTPError:
                counts["errors"] += 1
            await asyncio.sleep(r.uniform(0.05, 0.5))

    async def hang_up() -> None:
        while time.monotonic() < stop_at:
            await asyncio.sleep(5)
            payload = json.dumps({"texts": [rng.choice(sentences)] * 8, "beam": 5}).encode()
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /v1/translate HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            writer.close()
            counts["hangups"] += 1

    async def sampler() -> None:
        while time.monotonic() < stop_at:
            samples.append((time.monotonic() - started, rss_mb(pid)))
            print(f"{samples[-1][0]:7.0f} s  RSS {samples[-1][1]:8.1f} MB  {counts}", flush=True)
            await asyncio.sleep(every)

    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        await asyncio.gather(*[client(http, seed) for seed in range(clients)], hang_up(), sampler())
    return samples, counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--src", type=Path, help="sentences, one per line (default: generated dates)")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--every", type=float, default=10, help="seconds between memory samples")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--jsonl", type=Path, default=Path("serve_soak.jsonl"))
    args = p.parse_args()
    sentences = read_sentences(args.src, seed=7)

    process, base = start_server(args.run, True, [])
    port = int(base.rsplit(":", 1)[1])
    try:
        samples, counts = asyncio.run(
            soak(base, port, process.pid, sentences, args.minutes, args.every, args.clients)
        )
        alive = process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=30)
    tenth = max(1, len(samples) // 10)
    first = statistics.median(m for _, m in samples[:tenth])
    last = statistics.median(m for _, m in samples[-tenth:])
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "run": str(args.run),
        "minutes": args.minutes,
        "clients": args.clients,
        **counts,
        "server_alive": alive,
        "rss_first_tenth_mb": round(first, 1),
        "rss_last_tenth_mb": round(last, 1),
        "rss_peak_mb": round(max(m for _, m in samples), 1),
        "growth_mb": round(last - first, 1),
    }
    print(json.dumps(result))
    with args.jsonl.open("a", encoding="utf-8") as out:
        out.write(json.dumps({**result, "samples": samples}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
