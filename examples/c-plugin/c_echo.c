/*
 * c-echo: a Yonexus rule-handler plugin written in C against plugin-api/include/yonexus_plugin.h.
 *
 *   <rule>::version  ->  <rule>::c-echo <C_ECHO_VERSION>
 *   <rule>::<text>   ->  <rule>::<prefix><text>       (prefix: config key "prefix", default "")
 *
 * Lifecycle events (a follower authenticated, disconnected, changed liveness) are written to the
 * host's log at INFO level. The instance is immutable after create, so it declares itself
 * thread-safe, and every call only formats and queues, so it declares itself non-blocking.
 *
 * Build: `make` (see Makefile and README.md). C99, libc only.
 */
#include <stdlib.h>
#include <string.h>

#include "yonexus_plugin.h"

#ifndef C_ECHO_VERSION
#define C_ECHO_VERSION "1.0.0"
#endif

/* The longest prefix accepted from the config, in bytes. */
#define MAX_PREFIX 256

typedef struct {
    const yonexus_host_api *host; /* valid until destroy (calls after it return STATUS_GONE) */
    size_t prefix_len;
    char prefix[MAX_PREFIX];
} c_echo;

/* ---- Buffers: what this plugin allocates, only this plugin frees ------------------------- */

/* Put a copy of `text` into *err for the host, which hands it back to c_echo_free_buf. */
static void set_error(yonexus_buf *err, const char *text) {
    size_t len = strlen(text);
    if (err == NULL) {
        return;
    }
    err->ptr = (uint8_t *)malloc(len ? len : 1);
    if (err->ptr == NULL) {
        err->len = err->cap = 0;
        return;
    }
    memcpy(err->ptr, text, len);
    err->len = err->cap = len;
}

static void c_echo_free_buf(yonexus_buf buf) { free(buf.ptr); }

/* ---- A small JSON reader for the config (one flat object; other members are skipped) ---- */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} cursor;

static void skip_ws(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) {
        c->p++;
    }
}

static int hex4(cursor *c, unsigned *out) {
    int i;
    *out = 0;
    if (c->end - c->p < 4) {
        return -1;
    }
    for (i = 0; i < 4; i++) {
        uint8_t h = *c->p++;
        unsigned v;
        if (h >= '0' && h <= '9') {
            v = (unsigned)(h - '0');
        } else if (h >= 'a' && h <= 'f') {
            v = (unsigned)(h - 'a' + 10);
        } else if (h >= 'A' && h <= 'F') {
            v = (unsigned)(h - 'A' + 10);
        } else {
            return -1;
        }
        *out = *out * 16 + v;
    }
    return 0;
}

/* Append one byte to out (when out is not NULL); -1 when it does not fit. */
static int put(char *out, size_t cap, size_t *len, unsigned byte) {
    if (out != NULL) {
        if (*len >= cap) {
            return -1;
        }
        out[*len] = (char)byte;
    }
    (*len)++;
    return 0;
}

static int put_utf8(char *out, size_t cap, size_t *len, unsigned cp) {
    if (cp < 0x80) {
        return put(out, cap, len, cp);
    }
    if (cp < 0x800) {
        return put(out, cap, len, 0xC0 | (cp >> 6)) | put(out, cap, len, 0x80 | (cp & 0x3F));
    }
    if (cp < 0x10000) {
        return put(out, cap, len, 0xE0 | (cp >> 12)) |
               put(out, cap, len, 0x80 | ((cp >> 6) & 0x3F)) |
               put(out, cap, len, 0x80 | (cp & 0x3F));
    }
    return put(out, cap, len, 0xF0 | (cp >> 18)) | put(out, cap, len, 0x80 | ((cp >> 12) & 0x3F)) |
           put(out, cap, len, 0x80 | ((cp >> 6) & 0x3F)) | put(out, cap, len, 0x80 | (cp & 0x3F));
}

/* A JSON string at c->p (which is '"'); decoded into out[0..cap) when out is not NULL. */
static int read_string(cursor *c, char *out, size_t cap, size_t *len) {
    *len = 0;
    if (c->p >= c->end || *c->p != '"') {
        return -1;
    }
    c->p++;
    while (c->p < c->end) {
        uint8_t ch = *c->p++;
        if (ch == '"') {
            return 0;
        }
        if (ch < 0x20) {
            return -1;
        }
        if (ch != '\\') {
            if (put(out, cap, len, ch) != 0) {
                return -1;
            }
            continue;
        }
        if (c->p >= c->end) {
            return -1;
        }
        ch = *c->p++;
        switch (ch) {
        case '"': case '\\': case '/':
            if (put(out, cap, len, ch) != 0) return -1;
            break;
        case 'b': if (put(out, cap, len, '\b') != 0) return -1; break;
        case 'f': if (put(out, cap, len, '\f') != 0) return -1; break;
        case 'n': if (put(out, cap, len, '\n') != 0) return -1; break;
        case 'r': if (put(out, cap, len, '\r') != 0) return -1; break;
        case 't': if (put(out, cap, len, '\t') != 0) return -1; break;
        case 'u': {
            unsigned cp, lo;
            if (hex4(c, &cp) != 0) {
                return -1;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* a surrogate pair */
                if (c->end - c->p < 2 || c->p[0] != '\\' || c->p[1] != 'u') {
                    return -1;
                }
                c->p += 2;
                if (hex4(c, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF) {
                    return -1;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return -1;
            }
            if (put_utf8(out, cap, len, cp) != 0) {
                return -1;
            }
            break;
        }
        default:
            return -1;
        }
    }
    return -1;
}

/* Skip any JSON value (bounded nesting). */
static int skip_value(cursor *c, int depth) {
    size_t ignored;
    skip_ws(c);
    if (c->p >= c->end || depth > 64) {
        return -1;
    }
    if (*c->p == '"') {
        return read_string(c, NULL, 0, &ignored);
    }
    if (*c->p == '{' || *c->p == '[') {
        uint8_t close = *c->p == '{' ? '}' : ']';
        int object = *c->p == '{';
        c->p++;
        skip_ws(c);
        if (c->p < c->end && *c->p == close) {
            c->p++;
            return 0;
        }
        for (;;) {
            if (object) {
                skip_ws(c);
                if (read_string(c, NULL, 0, &ignored) != 0) return -1;
                skip_ws(c);
                if (c->p >= c->end || *c->p++ != ':') return -1;
            }
            if (skip_value(c, depth + 1) != 0) return -1;
            skip_ws(c);
            if (c->p >= c->end) return -1;
            if (*c->p == ',') {
                c->p++;
                continue;
            }
            if (*c->p++ == close) return 0;
            return -1;
        }
    }
    if (c->end - c->p >= 4 && (memcmp(c->p, "true", 4) == 0 || memcmp(c->p, "null", 4) == 0)) {
        c->p += 4;
        return 0;
    }
    if (c->end - c->p >= 5 && memcmp(c->p, "false", 5) == 0) {
        c->p += 5;
        return 0;
    }
    {
        /* A number: a run of digits, sign, point and exponent characters. */
        const uint8_t *start = c->p;
        while (c->p < c->end && ((*c->p >= '0' && *c->p <= '9') || *c->p == '-' ||
                                 *c->p == '+' || *c->p == '.' || *c->p == 'e' || *c->p == 'E')) {
            c->p++;
        }
        return c->p > start ? 0 : -1;
    }
}

/* Find the top-level member `key` of the JSON object in `json`. Returns 1 and decodes it into
 * out (at most cap bytes) when it is a string, 0 when absent (or null), -1 on malformed JSON,
 * -2 when it is not a string, -3 when it is longer than cap. */
static int config_string(yonexus_str json, const char *key, char *out, size_t cap,
                         size_t *out_len) {
    cursor c;
    char name[64];
    size_t name_len, key_len = strlen(key);
    int found = 0;
    c.p = json.ptr;
    c.end = json.ptr + json.len;
    skip_ws(&c);
    if (json.len == 0 || c.p == c.end) {
        return 0; /* no config at all: an empty table */
    }
    if (*c.p++ != '{') {
        return -1;
    }
    skip_ws(&c);
    if (c.p < c.end && *c.p == '}') {
        return 0;
    }
    for (;;) {
        cursor at;
        skip_ws(&c);
        at = c;
        if (read_string(&c, NULL, 0, &name_len) != 0) {
            return -1;
        }
        if (name_len == key_len && name_len < sizeof name) {
            read_string(&at, name, sizeof name, &name_len);
        } else {
            name_len = 0;
        }
        skip_ws(&c);
        if (c.p >= c.end || *c.p++ != ':') {
            return -1;
        }
        skip_ws(&c);
        if (name_len == key_len && memcmp(name, key, key_len) == 0) {
            if (c.p < c.end && *c.p == '"') {
                cursor probe = c;
                size_t need;
                if (read_string(&probe, NULL, 0, &need) != 0) {
                    return -1;
                }
                if (need > cap) {
                    return -3;
                }
                read_string(&c, out, cap, out_len);
                found = 1;
            } else if (c.end - c.p >= 4 && memcmp(c.p, "null", 4) == 0) {
                c.p += 4;
            } else {
                return -2;
            }
        } else if (skip_value(&c, 0) != 0) {
            return -1;
        }
        skip_ws(&c);
        if (c.p >= c.end) {
            return -1;
        }
        if (*c.p == ',') {
            c.p++;
            continue;
        }
        if (*c.p == '}') {
            return found;
        }
        return -1;
    }
}

/* ---- The plugin's functions ---------------------------------------------------------------- */

static yonexus_status c_echo_create(const yonexus_host_api *host, yonexus_str config_json,
                                    void **out_instance, yonexus_buf *err) {
    c_echo *self;
    int found;
    if (host == NULL || out_instance == NULL) {
        set_error(err, "null host or out pointer");
        return YONEXUS_STATUS_INVALID;
    }
    /* A host older than ABI 1.0's table would lack callbacks we call. */
    if (host->struct_size < YONEXUS_HOST_API_V1_0_SIZE) {
        set_error(err, "host API table is too small for ABI 1.0");
        return YONEXUS_STATUS_INVALID;
    }
    self = (c_echo *)calloc(1, sizeof *self);
    if (self == NULL) {
        set_error(err, "out of memory");
        return YONEXUS_STATUS_ERROR;
    }
    self->host = host;
    found = config_string(config_json, "prefix", self->prefix, sizeof self->prefix,
                          &self->prefix_len);
    if (found < 0) {
        free(self);
        set_error(err, found == -2   ? "config key 'prefix' must be a string"
                       : found == -3 ? "config key 'prefix' is longer than 256 bytes"
                                     : "config is not a valid JSON object");
        return YONEXUS_STATUS_ERROR;
    }
    if (found == 0) {
        self->prefix_len = 0;
    }
    *out_instance = self;
    return YONEXUS_STATUS_OK;
}

static int equals(yonexus_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

static yonexus_status c_echo_on_message(void *instance, yonexus_str rule, yonexus_str sender,
                                        yonexus_str content, yonexus_buf *err) {
    const c_echo *self = (const c_echo *)instance;
    const yonexus_host_api *h = self->host;
    yonexus_status st;
    uint8_t *reply;
    size_t len;
    if (equals(content, "version")) {
        static const char version[] = "c-echo " C_ECHO_VERSION;
        st = h->send_to(h->ctx, sender, rule, yonexus_str_of(version, sizeof version - 1));
    } else {
        len = self->prefix_len + content.len;
        reply = (uint8_t *)malloc(len ? len : 1);
        if (reply == NULL) {
            set_error(err, "out of memory");
            return YONEXUS_STATUS_ERROR;
        }
        memcpy(reply, self->prefix, self->prefix_len);
        if (content.len) {
            memcpy(reply + self->prefix_len, content.ptr, content.len);
        }
        st = h->send_to(h->ctx, sender, rule, yonexus_str_of(reply, len));
        free(reply);
    }
    /* The sender may have left meanwhile: an echo to nobody is not an error. */
    if (st != YONEXUS_STATUS_OK && st != YONEXUS_STATUS_OFFLINE && st != YONEXUS_STATUS_BUSY) {
        set_error(err, "the host refused the reply");
        return YONEXUS_STATUS_ERROR;
    }
    return YONEXUS_STATUS_OK;
}

/* Optional: set the vtable's on_event to NULL and the host never sends events. */
static yonexus_status c_echo_on_event(void *instance, uint32_t kind, yonexus_str identifier,
                                      yonexus_str status, yonexus_buf *err) {
    const c_echo *self = (const c_echo *)instance;
    const yonexus_host_api *h = self->host;
    const char *what;
    char line[256];
    size_t len, id_len;
    (void)err;
    switch (kind) {
    case YONEXUS_EVENT_AUTHENTICATED: what = " authenticated"; break;
    case YONEXUS_EVENT_DISCONNECTED: what = " disconnected"; break;
    case YONEXUS_EVENT_LIVENESS_CHANGED: what = " is now "; break;
    default: return YONEXUS_STATUS_OK; /* a newer host's event: ignore it */
    }
    if (!h->log_enabled(h->ctx, YONEXUS_LOG_INFO)) {
        return YONEXUS_STATUS_OK;
    }
    id_len = identifier.len < 128 ? identifier.len : 128;
    len = 0;
    memcpy(line, "follower ", 9);
    len += 9;
    if (id_len) {
        memcpy(line + len, identifier.ptr, id_len);
    }
    len += id_len;
    memcpy(line + len, what, strlen(what));
    len += strlen(what);
    if (kind == YONEXUS_EVENT_LIVENESS_CHANGED && status.len <= 16) {
        if (status.len) {
            memcpy(line + len, status.ptr, status.len);
        }
        len += status.len;
    }
    h->log(h->ctx, YONEXUS_LOG_INFO, yonexus_str_of(line, len));
    return YONEXUS_STATUS_OK;
}

static void c_echo_destroy(void *instance) { free(instance); }

static const yonexus_plugin_vtable vtable = {
    sizeof(yonexus_plugin_vtable), /* struct_size */
    YONEXUS_ABI_MINOR,             /* abi_minor */
    0,                             /* _reserved */
    c_echo_create,
    c_echo_on_message,
    c_echo_destroy,
    c_echo_free_buf,
    c_echo_on_event, /* or NULL */
};

YONEXUS_EXPORT_PLUGIN("c-echo", C_ECHO_VERSION, vtable,
                      YONEXUS_FLAG_NON_BLOCKING | YONEXUS_FLAG_THREAD_SAFE);
