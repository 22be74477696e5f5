"""The one ``survsr`` command. Each subcommand is the ``STAGE`` (or ``COMMAND``) object of its module
(:mod:`survsr.stage`); a module is imported only when its command runs, so ``survsr --help`` does not pay
for importing torch and Ray."""

from __future__ import annotations

import argparse
import sys

from survsr.stage import Command, run_command


def _ingest() -> Command:
    from survsr.pipelines.ingest import STAGE
    return STAGE


def _zssr() -> Command:
    from survsr.pipelines.zssr_pool import STAGE
    return STAGE


def _upscale() -> Command:
    from survsr.pipelines.upscale import COMMAND
    return COMMAND


def _train() -> Command:
    from survsr.pipelines.train_srgan import STAGE
    return STAGE


def _evaluate() -> Command:
    from survsr.pipelines.evaluate import STAGE
    return STAGE


def _serve() -> Command:
    from survsr.serve.app import COMMAND
    return COMMAND


def _enhance() -> Command:
    from survsr.pipelines.enhance import STAGE
    return STAGE


def _verify() -> Command:
    from survsr.verify import COMMAND
    return COMMAND


def _pipeline() -> Command:
    from survsr.pipelines.run import COMMAND
    return COMMAND


def _demo() -> Command:
    from survsr.pipelines.demo import COMMAND
    return COMMAND


# name -> (what `survsr --help` says, the import of the command's object)
COMMANDS = {
    "ingest": ("decode videos, detect/track faces, write crops and faces.parquet", _ingest),
    "zssr": ("per-face zero-shot SR on a Ray actor pool -> synthetic HR set", _zssr),
    "upscale": ("upscale still images (zssr or bicubic)", _upscale),
    "train": ("train the SRGAN generator with Ray Train", _train),
    "evaluate": ("PSNR/SSIM protocols and the HTML report", _evaluate),
    "serve": ("run the enhancement service on Ray Serve", _serve),
    "enhance": ("enhance video archives (full frame, faces, side by side)", _enhance),
    "verify": ("check outputs against their provenance records", _verify),
    "pipeline": ("ingest -> zssr -> train -> evaluate as one job", _pipeline),
    "demo": ("end-to-end demo on the bundled carphone video", _demo),
}


def _top_parser() -> argparse.ArgumentParser:
    epilog = "commands:\n" + "\n".join(f"  {name:<10} {desc}" for name, (desc, _) in COMMANDS.items())
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
    if argv[0] not in COMMANDS:
        top.parse_args(argv[:1])  # prints the usage error and exits 2
    description, load = COMMANDS[argv[0]]
    return run_command(load(), argv[1:], description=description, verbose=verbose)


if __name__ == "__main__":
    sys.exit(main())
