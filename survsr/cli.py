"""The one ``survsr`` command. Each subcommand lives in its stage's module, which provides
``add_arguments(parser)`` and ``main(args) -> int``; a module is imported only when its command runs, so
``survsr --help`` does not pay for importing torch and Ray."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from survsr.config import ConfigError, is_override
from survsr.provenance import OutputOverlapError

# Exit codes of the batch commands (ingest, zssr, upscale, enhance); `survsr verify` has its own (see its help).
EXIT_OK = 0        # every input done
EXIT_FAILED = 1    # nothing could be done (every input failed, or the job itself failed)
EXIT_USAGE = 2     # bad arguments or config, or an --out that overlaps an input: nothing was written
EXIT_PARTIAL = 3   # done with failures: outputs for the good inputs are written, some inputs failed or
                   # stopped early (the audit line says "partial"); scripts must not read this as success
EXIT_INTERRUPTED = 130


def batch_exit_code(done: int, failed: int) -> int:
    """0 all done, 3 done with failures, 1 nothing done (``done`` counts skipped-as-already-done too)."""
    if failed and not done:
        return EXIT_FAILED
    return EXIT_PARTIAL if failed else EXIT_OK


COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("survsr.pipelines.ingest", "decode videos, detect/track faces, write crops and faces.parquet"),
    "zssr": ("survsr.pipelines.zssr_pool", "per-face zero-shot SR on a Ray actor pool -> synthetic HR set"),
    "upscale": ("survsr.pipelines.upscale", "upscale still images (zssr or bicubic)"),
    "train": ("survsr.pipelines.train_srgan", "train the SRGAN generator with Ray Train"),
    "evaluate": ("survsr.pipelines.evaluate", "PSNR/SSIM protocols and the HTML report"),
    "serve": ("survsr.serve.app", "run the enhancement service on Ray Serve"),
    "enhance": ("survsr.pipelines.enhance", "enhance video archives (full frame, faces, side by side)"),
    "verify": ("survsr.verify", "check outputs against their provenance records"),
    "pipeline": ("survsr.pipelines.run", "ingest -> zssr -> train -> evaluate as one job"),
    "demo": ("survsr.pipelines.demo", "end-to-end demo on the bundled carphone video"),
}


def add_config_args(parser: argparse.ArgumentParser, default_name: str | None) -> None:
    """``--config`` plus repeatable ``--set key.sub=value``; bare ``key=value`` positionals also work."""
    parser.add_argument("--config", default=None,
                        help=f"YAML config (path or name in configs/; default: {default_name})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set detector.min_face=12 (repeatable)")


def split_overrides(args: argparse.Namespace, positional: str) -> None:
    """Move ``key=value`` tokens out of a positional list into ``args.overrides``."""
    values = getattr(args, positional, None) or []
    keep = [v for v in values if not is_override(v)]
    args.overrides = list(getattr(args, "overrides", []) or []) + [v for v in values if is_override(v)]
    setattr(args, positional, keep)


def _top_parser() -> argparse.ArgumentParser:
    epilog = "commands:\n" + "\n".join(f"  {name:<10} {desc}" for name, (_, desc) in COMMANDS.items())
    p = argparse.ArgumentParser(prog="survsr", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog)
    p.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    verbose = "-v" in argv or "--verbose" in argv
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    name = argv[0]
    if name not in COMMANDS:
        top.parse_args(argv[:1])  # prints the usage error and exits 2
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module_name, desc = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"survsr {name}", description=desc)
    module.add_arguments(parser)
    try:
        # Intermixed parsing lets `key=value` overrides follow options (`--out DIR k=v`), as users type them.
        args = parser.parse_intermixed_args(argv[1:])
    except TypeError:  # parsers with features intermixed parsing does not support
        args = parser.parse_args(argv[1:])
    args.command = name
    try:
        return int(module.main(args) or 0)
    except ConfigError as exc:
        print(f"survsr {name}: config error: {exc}", file=sys.stderr)
        return 2
    except OutputOverlapError as exc:  # nothing was written: a usage error, like a bad option
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"survsr {name}: interrupted; re-run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
