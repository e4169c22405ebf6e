"""scatterhoard: a distributed cache toolkit.

Speaks memcached (text, meta, binary), and later RESP and distcache, over one
sans-IO protocol core shared by the server, proxy, clients and tools.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
