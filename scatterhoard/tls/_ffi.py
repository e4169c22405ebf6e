"""The libssl binding: cffi in ABI mode (``dlopen``), nothing compiled at install time.

Every prototype below was checked against the OpenSSL 3.0 headers (``ssl.h``,
``tls1.h``, ``bio.h``, ``err.h``, ``evp.h``, ``rand.h``, ``core.h``).  A wrong
prototype in ABI mode does not fail loudly, it corrupts the stack, so keep
this list minimal and re-check it when adding to it (for instance
``SSL_CTX_set_options`` takes and returns ``uint64_t`` since 3.0, and
``SSL_session_reused`` is a function, no longer a macro).

The header macros we need (``SSL_CTX_set_session_cache_mode``,
``SSL_CTX_set_min_proto_version`` ...) are ``SSL_CTX_ctrl`` calls; their
command numbers and every other constant live in this one module.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import TLSLibraryError

CDEF = """
typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_session_st SSL_SESSION;
typedef struct ssl_method_st SSL_METHOD;
typedef struct ssl_cipher_st SSL_CIPHER;
typedef struct bio_st BIO;
typedef struct bio_method_st BIO_METHOD;
typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
typedef struct evp_cipher_st EVP_CIPHER;
typedef struct evp_mac_ctx_st EVP_MAC_CTX;
typedef struct engine_st ENGINE;
typedef struct ossl_param_st {
    const char *key;
    unsigned int data_type;
    void *data;
    size_t data_size;
    size_t return_size;
} OSSL_PARAM;

/* libssl: contexts */
const SSL_METHOD *TLS_server_method(void);
SSL_CTX *SSL_CTX_new(const SSL_METHOD *meth);
void SSL_CTX_free(SSL_CTX *);
uint64_t SSL_CTX_set_options(SSL_CTX *ctx, uint64_t op);
long SSL_CTX_ctrl(SSL_CTX *ctx, int cmd, long larg, void *parg);
long SSL_CTX_set_timeout(SSL_CTX *ctx, long t);
int SSL_CTX_set_num_tickets(SSL_CTX *ctx, size_t num_tickets);
int SSL_CTX_set_session_id_context(SSL_CTX *ctx, const unsigned char *sid_ctx, unsigned int sid_ctx_len);
int SSL_CTX_use_certificate_chain_file(SSL_CTX *ctx, const char *file);
int SSL_CTX_use_PrivateKey_file(SSL_CTX *ctx, const char *file, int type);
int SSL_CTX_check_private_key(const SSL_CTX *ctx);
int SSL_CTX_set_cipher_list(SSL_CTX *, const char *str);
int SSL_CTX_set_ciphersuites(SSL_CTX *ctx, const char *str);
void SSL_CTX_sess_set_new_cb(SSL_CTX *ctx, int (*new_session_cb)(SSL *ssl, SSL_SESSION *sess));
void SSL_CTX_sess_set_remove_cb(SSL_CTX *ctx, void (*remove_session_cb)(SSL_CTX *ctx, SSL_SESSION *sess));
void SSL_CTX_sess_set_get_cb(SSL_CTX *ctx,
    SSL_SESSION *(*get_session_cb)(SSL *ssl, const unsigned char *data, int len, int *copy));
void SSL_CTX_set_client_hello_cb(SSL_CTX *c, int (*cb)(SSL *s, int *al, void *arg), void *arg);
void SSL_CTX_set_alpn_select_cb(SSL_CTX *ctx,
    int (*cb)(SSL *ssl, const unsigned char **out, unsigned char *outlen,
              const unsigned char *in, unsigned int inlen, void *arg),
    void *arg);
int SSL_CTX_set_tlsext_ticket_key_evp_cb(SSL_CTX *ctx,
    int (*fp)(SSL *, unsigned char *, unsigned char *, EVP_CIPHER_CTX *, EVP_MAC_CTX *, int));

/* libssl: connections */
SSL *SSL_new(SSL_CTX *ctx);
void SSL_free(SSL *ssl);
void SSL_set_bio(SSL *s, BIO *rbio, BIO *wbio);
void SSL_set_accept_state(SSL *s);
int SSL_do_handshake(SSL *s);
int SSL_read(SSL *ssl, void *buf, int num);
int SSL_write(SSL *ssl, const void *buf, int num);
int SSL_shutdown(SSL *s);
void SSL_set_shutdown(SSL *ssl, int mode);
int SSL_get_error(const SSL *s, int ret_code);
int SSL_has_pending(const SSL *s);
int SSL_is_init_finished(const SSL *s);
const char *SSL_get_version(const SSL *s);
int SSL_session_reused(const SSL *s);
const SSL_CIPHER *SSL_get_current_cipher(const SSL *s);
const char *SSL_CIPHER_get_name(const SSL_CIPHER *c);
const char *SSL_get_servername(const SSL *s, const int type);
void SSL_get0_alpn_selected(const SSL *ssl, const unsigned char **data, unsigned int *len);
SSL_CTX *SSL_set_SSL_CTX(SSL *ssl, SSL_CTX *ctx);
size_t SSL_client_hello_get0_session_id(SSL *s, const unsigned char **out);
int SSL_client_hello_get0_ext(SSL *s, unsigned int type, const unsigned char **out, size_t *outlen);

/* libssl: sessions */
void SSL_SESSION_free(SSL_SESSION *ses);
int i2d_SSL_SESSION(const SSL_SESSION *in, unsigned char **pp);
SSL_SESSION *d2i_SSL_SESSION(SSL_SESSION **a, const unsigned char **pp, long length);
const unsigned char *SSL_SESSION_get_id(const SSL_SESSION *s, unsigned int *len);
long SSL_SESSION_get_time(const SSL_SESSION *s);
long SSL_SESSION_get_timeout(const SSL_SESSION *s);

/* libcrypto */
const BIO_METHOD *BIO_s_mem(void);
BIO *BIO_new(const BIO_METHOD *type);
int BIO_read(BIO *b, void *data, int dlen);
int BIO_write(BIO *b, const void *data, int dlen);
long BIO_ctrl(BIO *bp, int cmd, long larg, void *parg);
unsigned long ERR_get_error(void);
void ERR_error_string_n(unsigned long e, char *buf, size_t len);
void ERR_clear_error(void);
int RAND_bytes(unsigned char *buf, int num);
const EVP_CIPHER *EVP_aes_256_cbc(void);
int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                       const unsigned char *key, const unsigned char *iv);
int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                       const unsigned char *key, const unsigned char *iv);
int EVP_MAC_CTX_set_params(EVP_MAC_CTX *ctx, const OSSL_PARAM params[]);
"""

# --- constants (ssl.h / tls1.h / bio.h / core.h of OpenSSL 3.0) ---------------------
SSL_FILETYPE_PEM = 1
TLS1_VERSION = 0x0301
TLS1_1_VERSION = 0x0302
TLS1_2_VERSION = 0x0303
TLS1_3_VERSION = 0x0304

SSL_OP_NO_TICKET = 1 << 14
SSL_OP_NO_COMPRESSION = 1 << 17
SSL_OP_CIPHER_SERVER_PREFERENCE = 1 << 22
SSL_OP_NO_RENEGOTIATION = 1 << 30

SSL_MODE_RELEASE_BUFFERS = 0x10

SSL_SESS_CACHE_OFF = 0x0000
SSL_SESS_CACHE_SERVER = 0x0002
SSL_SESS_CACHE_NO_INTERNAL = 0x0100 | 0x0200  # NO_INTERNAL_LOOKUP | NO_INTERNAL_STORE

# SSL_CTX_ctrl command numbers behind the header macros we use
SSL_CTRL_MODE = 33  # SSL_CTX_set_mode
SSL_CTRL_SET_SESS_CACHE_MODE = 44  # SSL_CTX_set_session_cache_mode
SSL_CTRL_SET_GROUPS_LIST = 92  # SSL_CTX_set1_groups_list
SSL_CTRL_SET_MIN_PROTO_VERSION = 123  # SSL_CTX_set_min_proto_version
SSL_CTRL_SET_MAX_PROTO_VERSION = 124  # SSL_CTX_set_max_proto_version
BIO_CTRL_PENDING = 10  # BIO_pending / BIO_ctrl_pending

SSL_ERROR_NONE = 0
SSL_ERROR_SSL = 1
SSL_ERROR_WANT_READ = 2
SSL_ERROR_WANT_WRITE = 3
SSL_ERROR_SYSCALL = 5
SSL_ERROR_ZERO_RETURN = 6
SSL_ERROR_WANT_CLIENT_HELLO_CB = 11

SSL_CLIENT_HELLO_SUCCESS = 1
SSL_CLIENT_HELLO_ERROR = 0
SSL_CLIENT_HELLO_RETRY = -1

SSL_SENT_SHUTDOWN = 1
SSL_RECEIVED_SHUTDOWN = 2

TLSEXT_NAMETYPE_host_name = 0
SSL_TLSEXT_ERR_OK = 0
SSL_TLSEXT_ERR_ALERT_FATAL = 2
SSL_TLSEXT_ERR_NOACK = 3

# TLS extension numbers parsed in the ClientHello callback (RFC 6066 / 8446)
EXT_SERVER_NAME = 0
EXT_PRE_SHARED_KEY = 41
EXT_SUPPORTED_VERSIONS = 43

SSL_MAX_SSL_SESSION_ID_LENGTH = 32
TLSEXT_KEYNAME_LENGTH = 16
EVP_MAX_IV_LENGTH = 16
OSSL_PARAM_UTF8_STRING = 4
OSSL_PARAM_OCTET_STRING = 5

# cffi ships no type information: the FFI object is ``Any`` to mypy, and the
# wrappers below give the rest of the package typed entry points.
ffi: Any = importlib.import_module("cffi").FFI()
ffi.cdef(CDEF)

CData = Any  # cffi pointers are untyped for mypy; this alias marks them in signatures

_libs: tuple[Any, Any] | None = None


def libs() -> tuple[Any, Any]:
    """``(libssl, libcrypto)``, opened on first use."""
    global _libs
    if _libs is None:
        try:
            ssl = ffi.dlopen("libssl.so.3")
            crypto = ffi.dlopen("libcrypto.so.3")
        except OSError as exc:
            raise TLSLibraryError(f"cannot load OpenSSL 3 (libssl.so.3): {exc}") from None
        _libs = (ssl, crypto)
    return _libs


def error_queue() -> str:
    """Drain OpenSSL's (thread-local) error queue into one readable string."""
    _, crypto = libs()
    reasons = []
    buf = ffi.new("char[256]")
    while True:
        code = crypto.ERR_get_error()
        if code == 0:
            break
        crypto.ERR_error_string_n(code, buf, 256)
        reasons.append(ffi.string(buf).decode("ascii", "replace"))
    return "; ".join(reasons) or "unknown OpenSSL error"


def check(ok: bool, what: str) -> None:
    """Raise :class:`TLSLibraryError` with the error queue when ``ok`` is false."""
    if not ok:
        raise TLSLibraryError(f"{what}: {error_queue()}")


def to_bytes(ptr: CData, length: int) -> bytes:
    return bytes(ffi.buffer(ptr, length))
