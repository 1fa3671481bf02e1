"""The configuration layer: `load(path)` gives a validated `Config` or a `ConfigError`.

Everything else in trafficd reads its settings from the `Config` this returns;
see `loader` for the order of the steps and `model` for the keys.
"""

from trafficd.config.loader import load, summary
from trafficd.config.model import ACTUATOR_TYPES, Config
from trafficd.config.source import ConfigError, Problem

__all__ = ["ACTUATOR_TYPES", "Config", "ConfigError", "Problem", "load", "summary"]
