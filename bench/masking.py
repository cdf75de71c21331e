"""What masking secrets costs per line of task output (`runner.secrets.Masker.mask`).

    python bench/masking.py            # 200,000 lines per row
    python bench/masking.py --lines 20000

Every line a task prints goes through `Masker.mask` before it is stored and echoed, so
its cost adds to the runner's per-line cost (about 37 us of wall time end to end, see
bench/README.md). Rows: 0, 1, 5, 20 and 100 secrets of 24 random characters, on log-like
lines of 60-140 characters, 1 in 1,000 holding a secret. Each row shows microseconds of
CPU per line for the Masker and for the plain alternation it gates (`pattern.search`,
then `sub` on a hit), the median of 5 rounds. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import string
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/masking.py` from a checkout
    sys.path.insert(0, str(REPO))

from runner.secrets import MASK, Masker  # noqa: E402  (after the sys.path line above)

_WORDS = [
    *[
        "INFO",
        "DEBUG",
        "WARN",
        "processing",
        "row",
        "rows",
        "of",
        "table",
        "trips",
        "zone",
        "wrote",
        "read",
        "file",
        "bytes",
    ],
    *[
        "took",
        "ms",
        "user",
        "request",
        "GET",
        "POST",
        "/api/v1/items",
        "status=200",
        "ok",
        "done",
        "value=42",
        "id=",
        "key",
    ],
]


def _line(rng: random.Random) -> str:
    parts = [f"2024-05-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"]
    while sum(map(len, parts)) < rng.randint(60, 140):
        parts.append(rng.choice(_WORDS) if rng.random() < 0.8 else str(rng.randint(0, 10**6)))
    if rng.random() < 0.1:
        parts.append(json.dumps({"n": rng.randint(0, 99), "name": rng.choice(_WORDS)}))
    return " ".join(parts)


def _secret(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits + "!#%+", k=24))


def _cpu_per_line(func: object, lines: list[str]) -> float:
    call = func  # a local name: the loop below is what is measured
    rounds = []
    for _ in range(5):
        start = time.process_time()
        for line in lines:
            call(line)  # type: ignore[operator]  # a callable taking one str
        rounds.append((time.process_time() - start) / len(lines) * 1e6)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(7)
    lines = [_line(rng) for _ in range(args.lines)]
    rows = []
    for count in (0, 1, 5, 20, 100):
        secrets = [_secret(rng) for _ in range(count)]
        sample = list(lines)
        for index in range(0, len(sample), 1000) if secrets else ():
            sample[index] += " " + rng.choice(secrets)
        masker = Masker(secrets)
        masked = [masker.mask(line) for line in sample]
        assert not any(secret in line for secret in secrets for line in masked[::997])
        assert not secrets or sum(MASK in line for line in masked) >= len(sample) // 1000
        plain = re.compile("|".join(map(re.escape, secrets))) if secrets else None

        def alternation(line: str, plain: re.Pattern[str] | None = plain) -> str:
            if plain is None or plain.search(line) is None:
                return line
            return plain.sub(MASK, line)

        rows.append(
            {
                "secrets": count,
                "masker_us": round(_cpu_per_line(masker.mask, sample), 3),
                "alternation_us": round(_cpu_per_line(alternation, sample), 3),
            }
        )
        print(
            f"{count:>4} secrets: Masker.mask {rows[-1]['masker_us']:7.3f} us/line,"
            f" plain alternation {rows[-1]['alternation_us']:7.3f} us/line",
            flush=True,
        )
    print(json.dumps({"lines": args.lines, "rows": rows}))


if __name__ == "__main__":
    main()
