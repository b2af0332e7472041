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
    doctor = commands.add_parser(
        "doctor",
        help="explain a stuck or failed rotation and apply the safe fixes (exit 0 healthy, 1 failing, "
        "3 unreachable, 4 pending)",
    )
    doctor.add_argument("secret_id", nargs="?", metavar="SECRET", help="name or ARN of the secret")
    doctor.add_argument("--all", action="store_true", help="every secret that --function rotates")
    doctor.add_argument("--function", metavar="ARN", help="with --all: the rotation function (ARN or name)")
    doctor.add_argument("--fix", action="store_true", help="move labels back to what works, after asking")
    doctor.add_argument("--yes", action="store_true", help="with --fix: do not ask (for scripts)")
    doctor.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    doctor.add_argument(
        "--stale-after",
        type=float,
        default=60,
        metavar="MINUTES",
        help="an AWSPENDING younger than this may be a rotation still running: left alone (default: 60)",
    )
    doctor.add_argument("--no-cloudtrail", action="store_true", help="do not look up the last attempt")
    from rotators.cli import invoke as invoke_module
    from rotators.cli import local as local_module
    from rotators.cli import wire as wire_module

    invoke_help = "run a function of template.yaml with an event file, like sam local invoke"
    rotate_help = "start a rotation and run its four steps here, as Secrets Manager would"
    wire_help = "attach a deployed rotator to a secret (RotateSecret with rotation rules)"
    local_help = "start or stop the local servers and secrets the sample events in events/ need"
    invoke_module.add_arguments(commands.add_parser("invoke", help=invoke_help))
    wire_module.add_rotate_arguments(commands.add_parser("rotate", help=rotate_help))
    wire_module.add_wire_arguments(commands.add_parser("wire", help=wire_help))
    local_module.add_arguments(commands.add_parser("local", help=local_help))
    args = parser.parse_args(argv)

    sam_commands = {
        "invoke": invoke_module.run,
        "rotate": wire_module.rotate_command,
        "wire": wire_module.wire_command,
        "local": local_module.run,
    }
    if args.command in sam_commands:
        return sam_commands[args.command](args)

    if args.command == "check":
        from rotators.cli import check as check_module

        return check_module.render(check_module.run_checks(args.secret_id, args.engine), args.json)

    if args.command == "doctor":
        from rotators.cli import doctor as doctor_module

        return doctor_module.run(args)

    if args.command == "demo":
        os.environ["POWERTOOLS_LOG_LEVEL"] = "INFO" if args.verbose else "WARNING"
        from rotators.cli import demo as demo_module

        strategies = ["single", "alternating"] if args.strategy == "both" else [args.strategy]
        try:
            return demo_module.run(strategies, verbose=args.verbose)
        except RuntimeError as exc:  # a missing server binary, say: tell how to fix it
            print(f"rotators demo: {exc}", file=sys.stderr)
            return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
