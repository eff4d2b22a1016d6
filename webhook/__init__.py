"""crdguard: stop CRD and controller version conflicts before they reach a cluster."""

__version__ = "0.1.0"
