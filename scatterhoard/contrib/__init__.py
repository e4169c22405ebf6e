"""Integrations with other frameworks (each imports its framework only when used).

* :mod:`scatterhoard.contrib.django` -- ``HoardCache``, a Django cache backend.
"""
