"""``zsdseg``: the command line. Each subcommand lives in its own module exposing
``add_arguments(parser)`` and ``run(args) -> int``; this file only dispatches."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import Cancelled, UserError

SUBCOMMANDS = {
    "segment": ("ZeroShotDiffusionSegLib.segment_command", "Segment a 2-D image or a 3-D volume."),
    "batch": ("ZeroShotDiffusionSegLib.cohort.cli", "Segment a cohort of volumes (CSV manifest or folder), resumable, optionally on Ray."),
    "worker": ("ZeroShotDiffusionSegLib.worker", "Serve requests on stdin/stdout with a warm model (used by Slicer)."),
    "serve": ("ZeroShotDiffusionSegLib.server.cli", "Serve the engine over HTTP for remote clients."),
    "eval": ("ZeroShotDiffusionSegLib.evaluation.cli", "Evaluate accuracy on images or volumes with ground truth."),
    "bench": ("ZeroShotDiffusionSegLib.evaluation.bench", "Benchmark speed and memory per stage."),
    "fetch-model": ("ZeroShotDiffusionSegLib.model_fetch", "Download a model folder (safetensors) and check it loads, for offline use."),
}


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with the product's error form: one line ``zsdseg: error: ...``, exit 2 (no usage block)."""

    def error(self, message):
        hint = f" (see '{self.prog} --help')"
        self.exit(2, f"zsdseg: error: {message}{hint}\n")


def build_parser(command=None) -> argparse.ArgumentParser:
    """Only the chosen subcommand's module is imported: ``--help`` stays fast and torch-free."""
    parser = OneLineErrorParser(prog="zsdseg", description="Zero-shot lesion segmentation from diffusion-model attention.")
    parser.add_argument("--version", action="version", version=f"zsdseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
            command_parser.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((word for word in argv if word in SUBCOMMANDS), None)
    args = build_parser(command).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserError as error:
        print(f"zsdseg: error: {error}", file=sys.stderr)
        return error.exit_code
    except (Cancelled, KeyboardInterrupt):
        print("zsdseg: cancelled", file=sys.stderr)
        return Cancelled.exit_code


if __name__ == "__main__":
    sys.exit(main())
