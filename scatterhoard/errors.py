"""One exception tree for all of scatterhoard, rooted in :class:`HoardError`."""

from __future__ import annotations


class HoardError(Exception):
    """Base class of every exception scatterhoard raises on purpose."""


class ProtocolError(HoardError):
    """Bytes that do not follow the protocol (raised by the sans-IO core)."""


class AddressError(HoardError, ValueError):
    """An address string that none of the accepted forms matches."""


class ConfigError(HoardError, ValueError):
    """A configuration file or option that is invalid."""


class CacheError(HoardError):
    """An operation against a cache failed (client side)."""


class ClientError(CacheError):
    """The server rejected the request as malformed (CLIENT_ERROR, bad key...)."""


class ServerError(CacheError):
    """The server could not do what was asked (SERVER_ERROR ...)."""


class CacheConnectionError(CacheError):
    """The connection to a cache server failed or was lost."""


class CacheTimeoutError(CacheError):
    """A cache server did not answer in time."""


class TLSError(HoardError):
    """Anything that goes wrong in the TLS layer (:mod:`scatterhoard.tls`)."""


class TLSLibraryError(TLSError):
    """libssl could not be loaded or refused a configuration (certificate, key, ciphers...)."""


class TLSHandshakeError(TLSError):
    """A TLS handshake failed (bad client, protocol mismatch, fatal alert)."""


class SessionBlobError(TLSError):
    """A cached session or ticket-key blob failed to decrypt or authenticate."""
