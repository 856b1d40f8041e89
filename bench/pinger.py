"""The ping process: GET /ping on a fresh connection every ``--interval`` seconds until SIGTERM.

    python bench/pinger.py --url http://127.0.0.1:PORT --out PINGS.txt

Writes one line per ping: ``wall_time latency_ms status`` (status 0: no answer within --timeout).
A process of its own, so the load generator's threads never delay a ping.
"""

from __future__ import annotations

import argparse
import http.client
import signal
import sys
import time
import urllib.parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    parsed = urllib.parse.urlparse(args.url)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    with open(args.out, "w", buffering=1) as out:
        while not stopping:
            wall, started = time.time(), time.perf_counter()
            status = 0
            conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=args.timeout)
            try:
                conn.request("GET", "/ping")
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0
            finally:
                conn.close()
            latency = time.perf_counter() - started
            out.write(f"{wall:.4f} {latency * 1000:.2f} {status}\n")
            time.sleep(max(0.0, args.interval - latency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
