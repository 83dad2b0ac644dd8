"""The `report` and `compare` sub-commands: re-render run folders from their saved data."""

from __future__ import annotations

import argparse
import os
import sys

from harness.core.runinfo import PLOTLYJS_MODES

PLOTLYJS_HELP = ("plotly.js in the page: inline (works offline, ~5 MB), directory (one shared "
                 "../plotly.min.js beside the run folders) or cdn (small, needs the internet); "
                 "default %(default)s")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Writes index.html, summary.json, summary.md, junit.xml and CSV files into "
                     "RUN_DIR. Exit code 1 when a threshold the run was started with is "
                     "breached, 2 when RUN_DIR cannot be read.")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a run folder written by nodeport-harness run")
    parser.add_argument("--plotlyjs", choices=PLOTLYJS_MODES, default="inline",
                        help=PLOTLYJS_HELP)


def run_report(args: argparse.Namespace) -> int:
    """Print the files written; exit 1 when a threshold the run was given is breached."""
    from harness.report.build import build_report

    result = build_report(args.run_dir, plotlyjs=args.plotlyjs)
    for path in result["files"].values():
        print(path)
    breached = [t for t in result["thresholds"] if not t["passed"]]
    for threshold in breached:
        print(f"threshold breached: {threshold['text']}", file=sys.stderr)
    return 1 if breached else 0


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+",
                        help="two or more run folders, e.g. single node, all nodes, LB")
    parser.add_argument("-o", "--output", dest="out_dir", default=None, metavar="OUT_DIR",
                        help="folder for the page (default: a new compare-<time> folder beside "
                             "the first run; an existing OUT_DIR's page is replaced)")
    parser.add_argument("--plotlyjs", choices=PLOTLYJS_MODES, default="inline",
                        help=PLOTLYJS_HELP)


def run_compare(args: argparse.Namespace) -> int:
    from harness.report.compare import build_compare

    result = build_compare(args.run_dirs, args.out_dir, plotlyjs=args.plotlyjs)
    for path in result["files"].values():
        print(os.path.abspath(path))  # pasted anywhere, it still names the page
    for warning in result.get("warnings", ()):
        print(f"warning: {warning}", file=sys.stderr)
    for check in result["whatif_checks"]:  # a run that re-ran another's what-if for real
        print(f"{check['rerun']} re-ran {check['original']}'s what-if ({check['title']}): "
              f"{check['sentence']}", file=sys.stderr)
    return 0
