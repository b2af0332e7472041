"""The `rotators` command."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rotators", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="rotate a secret end to end against a throwaway PostgreSQL and a local Secrets Manager",
    )
    demo.add_argument(
        "--strategy",
        choices=["single", "alternating", "both"],
        default="both",
        help="which rotation strategy to show (default: both)",
    )
    demo.add_argument("--verbose", action="store_true", help="also print the rotator's JSON log lines")
    check = commands.add_parser(
        "check", help="preflight a secret before turning rotation on (changes nothing)"
    )
    check.add_argument("--secret-id", required=True, help="name or ARN of the secret")
    check.add_argument("--engine", help="engine module (postgresql, mysql, ...); default: the secret's")
    check.add_argument("--json", action="store_true", help="print the checks as JSON")
    args = parser.parse_args(argv)

    if args.command == "check":
        from rotators import check as check_module

        return check_module.render(check_module.run_checks(args.secret_id, args.engine), args.json)

    if args.command == "demo":
        os.environ["POWERTOOLS_LOG_LEVEL"] = "INFO" if args.verbose else "WARNING"
        from rotators import demo as demo_module

        strategies = ["single", "alternating"] if args.strategy == "both" else [args.strategy]
        try:
            return demo_module.run(strategies)
        except RuntimeError as exc:  # a missing server binary, say: tell how to fix it
            print(f"rotators demo: {exc}", file=sys.stderr)
            return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
