"""survsr: unpaired super-resolution of faces in surveillance footage, on Ray.

The design keeps ``models/``, ``video/``, ``pipelines/`` and ``serve/`` as top-level folders of the repository, but
they are subpackages of this one namespace (``survsr.models`` ...), never top-level modules of their own. An
install maps them with setuptools' ``package-dir``; a bare source checkout (``ray job submit --working-dir .``
ships one to a cluster that has no survsr installed) gets the same names from the extra search path below.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pipelines" / "__init__.py").is_file() and (_checkout / "survsr" / "cli.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 - the package's own __path__
