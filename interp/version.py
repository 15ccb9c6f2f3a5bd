"""The package version (one place; ``interp.__version__`` and every job manifest read it)."""

__version__ = "0.1.0"
