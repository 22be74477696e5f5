"""survsr: unpaired super-resolution of faces in surveillance footage, on Ray."""

__version__ = "0.1.0"
