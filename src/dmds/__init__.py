"""dmds, the Distributed Message Delivery Service: store-and-forward direct messaging."""

__version__ = "0.1.0"
