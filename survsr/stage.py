"""The contract every command and stage module exposes: one object, imported directly by the CLI and the
pipeline (no module names in strings, no registry).

A :class:`Command` is what ``survsr NAME`` runs. A :class:`Stage` is a command that produces a resumable
output directory; ``identity(cfg)`` is the hash of exactly the settings that shape its outputs (never
parallelism, never where Ray runs). The stage's own resume and the pipeline's done-marker key both use it,
so they cannot disagree about whether finished work is still valid.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable


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


@dataclass(frozen=True)
class Command:
    name: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    main: Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Stage(Command):
    load_config: Callable[..., Any]  # (path | None, overrides) -> the validated config (its schema's type)
    identity: Callable[[Any], str]  # config -> hash of what shapes the outputs
    run: Callable[..., Any]  # the plain entry point (usable without the CLI and without a pipeline)


def run_command(command: Command, argv: list[str], *, description: str | None = None,
                verbose: bool = False) -> int:
    """Parse ``argv`` for ``command`` and run it: what ``survsr NAME ...`` and ``python -m MODULE ...``
    (the ``ray job submit`` entrypoints) both do. Config errors exit 2, an interrupt 130."""
    import logging
    import sys

    from survsr.config import ConfigError
    from survsr.provenance import OutputOverlapError

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog=f"survsr {command.name}", description=description)
    command.add_arguments(parser)
    try:
        # Intermixed parsing lets `key=value` overrides follow options (`--out DIR k=v`), as users type them.
        args = parser.parse_intermixed_args(argv)
    except TypeError:  # parsers with features intermixed parsing does not support
        args = parser.parse_args(argv)
    args.command = command.name
    args.verbose = verbose
    try:
        return int(command.main(args) or 0)
    except ConfigError as exc:
        print(f"survsr {command.name}: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OutputOverlapError as exc:  # nothing was written: a usage error, like a bad option
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"survsr {command.name}: interrupted; re-run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
