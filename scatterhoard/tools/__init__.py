"""Operator tools over the sans-IO protocol core: ``hoard check`` (conformance) and
``hoard snoop`` (a decoding, transparent proxy)."""
