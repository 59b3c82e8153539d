"""The installed version of tether-frameworks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tether-frameworks")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0+unknown"
