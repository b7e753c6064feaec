"""The demo's client traffic: send the held-out rows one request at a time and count who answered.

Usage: python examples/traffic.py URL ROWS.csv [REQUESTS]
Prints the count of answers by HTTP status, version and variant (stable, canary, ...).
"""

from __future__ import annotations

import sys
from collections import Counter

import httpx
import pandas as pd


def main(url: str, rows_csv: str, requests: int = 300) -> None:
    rows = pd.read_csv(rows_csv).drop(columns=["target"], errors="ignore").to_dict("records")
    seen: Counter[tuple[int, str, str]] = Counter()
    with httpx.Client(timeout=10) as client:
        for i in range(requests):
            r = client.post(url + "/predict", json={"instances": [rows[i % len(rows)]]})
            seen[(r.status_code, r.headers.get("x-shipml-version", "-"), r.headers.get("x-shipml-variant", "-"))] += 1
    for (status, version, variant), n in sorted(seen.items()):
        print(f"  {n:4d} answers  HTTP {status}  version {version}  variant {variant}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 300)
