"""Aggregate any set of run directories or sweep directories: python scripts/report.py PATH... [--out DIR]."""

from __future__ import annotations

import argparse
from pathlib import Path

from mu_lightning.tracking.report import summarise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="run dirs, sweep dirs or folders above them")
    parser.add_argument("--out", type=Path, help="where summary.csv, summary.md and the PNGs go "
                        "(default: the one PATH given; required with several)")
    args = parser.parse_args(argv)
    if args.out is None and len(args.paths) > 1:
        parser.error("--out is required with several PATHs")
    out = args.out or args.paths[0]
    summary = summarise(args.paths, out)
    print((out / "summary.md").read_text(), end="")
    if not summary.rows:
        raise SystemExit(f"no completed runs under {' '.join(map(str, args.paths))}")


if __name__ == "__main__":
    main()
