"""A bounded load test of `archive-search serve` on loopback over a 10-hour index.

    .venv/bin/python benchmarks/bench_serve_load.py --folder /work/shared/data/librispeech-mini/audio \
        --hours 10 --clients 8 --seconds 60

Builds the index as bench_fused_queries.py does (its `replicate`: the folder indexed once, its
rows copied under symlinked names up to `--hours`), starts `archive-search serve` on a free
loopback port in its own process, and runs `--clients` threads for `--seconds`. Each client, in a
loop, searches a word drawn from the transcripts and fetches the top hit's audio, as a listener
does. Prints one JSON line: requests, errors (any status but 200, or a failed connection),
p50/p95 latency per endpoint, throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from archive_search.api import Archive
from archive_search.embedders.registry import load_models

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fused_queries import replicate  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/api/stats", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not answer in time")


def client(url: str, words: list[str], seed: int, until: float, results: dict[str, list[float]], errors: list[str]):
    """One listener until `until`: search a random word, fetch the top hit's audio, again."""
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=60) as http:
        while time.monotonic() < until:
            word = rng.choice(words)
            started = time.perf_counter()
            try:
                response = http.get("/api/search", params={"q": word, "top": 10})
            except httpx.HTTPError as exc:
                errors.append(f"search {word!r}: {exc!r}")
                continue
            results["search"].append(1000 * (time.perf_counter() - started))
            if response.status_code != 200:
                errors.append(f"search {word!r}: {response.status_code} {response.text[:200]}")
                continue
            hits = response.json()["hits"]
            if not hits or time.monotonic() >= until:
                continue
            started = time.perf_counter()
            try:
                audio = http.get(hits[0]["audio_url"])
            except httpx.HTTPError as exc:
                errors.append(f"audio: {exc!r}")
                continue
            results["audio"].append(1000 * (time.perf_counter() - started))
            if audio.status_code != 200 or audio.headers.get("content-type") != "audio/wav":
                errors.append(f"audio {hits[0]['audio_url']}: {audio.status_code}")


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    if not ordered:
        return {"count": 0}
    return {"count": len(ordered), "p50_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1), "max_ms": round(ordered[-1], 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--hours", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads while building the index")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="build the index here and reuse it on the next run (default: temporary)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or Path(scratch)
        built = work / "built.json"
        if not built.exists():
            models = load_models(device="cpu")
            archive = Archive.open(work / "index", models)
            archive.add(args.folder)
            words = sorted({t for w in archive._get_store().transcript_words() for t in w.tokens if len(t) >= 4})
            (work / "copies").mkdir()
            hours = replicate(archive, work / "copies", args.hours) / 3600
            built.write_text(json.dumps({"words": words, "hours": hours}))
            del archive, models
        words, hours = (json.loads(built.read_text())[k] for k in ("words", "hours"))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "archive_search.cli.search", "serve", "--index", str(work / "index")]
        command += ["--port", str(port)]
        server = subprocess.Popen(command, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        try:
            wait_until_up(url, server)
            stats = httpx.get(f"{url}/api/stats").json()
            httpx.get(f"{url}/api/search", params={"q": words[0]}, timeout=120)  # warm-up: reranker, transcript cache
            results: dict[str, list[float]] = {"search": [], "audio": []}
            errors: list[str] = []
            until = time.monotonic() + args.seconds
            started = time.monotonic()
            workers = [threading.Thread(target=client, args=(url, words, args.seed + i, until, results, errors))
                       for i in range(args.clients)]  # fmt: skip
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            elapsed = time.monotonic() - started
        finally:
            server.terminate()
            server.wait(30)
    requests = len(results["search"]) + len(results["audio"])
    print(json.dumps({"hours": round(hours, 2), "files": stats["files"], "vectors": stats["vectors"], "words": stats["words"],
                      "clients": args.clients, "seconds": round(elapsed, 1), "requests": requests, "errors": len(errors),
                      "first_errors": errors[:3], "requests_per_s": round(requests / elapsed, 2),
                      "search": summary(results["search"]), "audio": summary(results["audio"])}))  # fmt: skip


if __name__ == "__main__":
    main()
