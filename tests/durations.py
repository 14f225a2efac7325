"""Where the suite's time goes: the slowest tests and the time per module, from the JUnit XML that every
`make test` keeps (test-results/junit.xml).

    python tests/durations.py [FILE] [--top N]
"""

from __future__ import annotations

import argparse
import collections
import xml.etree.ElementTree as ET
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[1] / "test-results" / "junit.xml"


def read(path: Path) -> list[tuple[float, str, str]]:
    """(seconds, module, test id) of every test case in the file (set-up, call and teardown together)."""
    root = ET.parse(path).getroot()
    return [(float(case.get("time", 0.0)), case.get("classname", ""), case.get("name", ""))
            for case in root.iter("testcase")]


def report(rows: list[tuple[float, str, str]], top: int) -> str:
    per_module = collections.Counter()
    for seconds, module, _ in rows:
        per_module[module] += seconds
    total = sum(per_module.values())
    lines = [f"{len(rows)} tests, {total:.1f} s in all (summed over workers)", "", f"slowest {top}:"]
    lines += [f"{s:8.2f} s  {m}::{n}" for s, m, n in sorted(rows, reverse=True)[:top]]
    lines += ["", "per module:"]
    lines += [f"{s:8.1f} s  {100 * s / max(total, 1e-9):5.1f} %  {m}" for m, s in per_module.most_common()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if not args.file.is_file():
        raise SystemExit(f"expected the JUnit XML of a test run at {args.file} (make test writes it), got no such file")
    print(report(read(args.file), args.top))


if __name__ == "__main__":
    main()
