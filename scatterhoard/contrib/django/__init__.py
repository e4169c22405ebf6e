"""Django integration: :class:`HoardCache`, a cache backend over :class:`scatterhoard.Client`.

.. code-block:: python

    CACHES = {
        "default": {
            "BACKEND": "scatterhoard.contrib.django.HoardCache",
            "LOCATION": ["10.0.0.1:11211", "10.0.0.2:11211"],   # or "a:11211;b:11211", or a YAML pool
            "OPTIONS": {"protocol": "meta", "timeout": 500},    # any scatterhoard.Client option
        }
    }
    SESSION_ENGINE = "django.contrib.sessions.backends.cache"   # sessions work on it unchanged
"""

from .cache import HoardCache

__all__ = ["HoardCache"]
