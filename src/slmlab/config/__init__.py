"""Typed run configuration: the schema (dataclasses), loading (TOML + dotted overrides) and checks."""

from .schema import *  # noqa: F401,F403
from .schema import __all__  # noqa: F401
