"""What `remedy_client.capture_exception` costs the calling thread.

Two runs: the intake up (a loopback HTTP server answering 202) and down (nothing listening
on the port, so the sender retries with back-off and the queue fills and drops). Each
captures exceptions raised eight frames deep, one every `--interval-ms`, and times only the
call itself in the application's thread. The sender thread's work (formatting, redaction,
JSON, HTTP) is not in these numbers except as the CPU it takes from the host.

    .venv/bin/python bench/client_overhead.py [--calls 3000] [--interval-ms 1]
"""

from __future__ import annotations

import argparse
import http.server
import platform
import socket
import statistics
import sys
import threading
import time
from typing import Any

from remedy_client import Client


class _Accept(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = (
            b'{"incident_id":"bench","workflow_id":"w","deduplicated":true,'
            b'"occurrences":1,"ui_url":""}'
        )
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _deep(depth: int, order: dict[str, int]) -> int:
    if depth == 0:
        return order["sku"]
    return _deep(depth - 1, order)


def _measure(url: str, calls: int, interval_s: float) -> tuple[list[float], dict[str, int]]:
    client = Client(url, "bench-token", "bench", release="bench", root=".", backoff_base=0.2)
    timings: list[float] = []
    try:
        for _ in range(calls):
            try:
                _deep(8, {})
            except KeyError as exc:
                started = time.perf_counter_ns()
                client.capture_exception(exc)
                timings.append((time.perf_counter_ns() - started) / 1000)
            if interval_s:
                time.sleep(interval_s)
        client.flush(5)
        return timings, client.stats()
    finally:
        client.close(timeout=0)


def _summary(timings: list[float]) -> tuple[float, float]:
    ordered = sorted(timings)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--interval-ms", type=float, default=1.0)
    args = parser.parse_args()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    up_url = f"http://127.0.0.1:{server.server_address[1]}"
    down_url = f"http://127.0.0.1:{_unused_port()}"

    results = {}
    for name, url in (("up", up_url), ("down", down_url)):
        timings, stats = _measure(url, args.calls, args.interval_ms / 1000)
        median, p99 = _summary(timings)
        results[name] = (median, p99)
        print(
            f"intake {name:<4}  capture_exception: median {median:6.1f} us   p99 {p99:6.1f} us"
            f"   (sent {stats['sent']}, dropped {stats['dropped']}, queued {stats['queued']})"
        )
    server.shutdown()

    machine = f"Python {platform.python_version()}, {platform.machine()}, {sys.platform}"
    print()
    print("For bench/README.md:")
    print(
        f"| {args.calls} calls, 9-frame traceback, 1 every {args.interval_ms:g} ms | "
        f"{results['up'][0]:.1f} / {results['up'][1]:.1f} µs | "
        f"{results['down'][0]:.1f} / {results['down'][1]:.1f} µs | {machine} |"
    )


if __name__ == "__main__":
    main()
