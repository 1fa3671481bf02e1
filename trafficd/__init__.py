"""trafficd: keeps a geo-replicated Quay's traffic away from sites whose storage fails."""

__version__ = "0.1.0"
