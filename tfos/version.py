"""The installed version, from package metadata (never pkg_resources)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tfos")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
