/* A C plugin that exercises every part of the ABI, for plugin-api/tests/c_header.rs, which
 * builds it with `cc` against include/yonexus_plugin.h, loads it and calls it through the Rust
 * types with the in-memory TestHost. Content drives behaviour:
 *   "fail"   -> STATUS_ERROR with a malloc'd message (freed by the host via free_buf)
 *   "all"    -> broadcast "everyone" to all but the sender, reply "broadcast:<n>"
 *   "who"    -> reply the connected followers ('\n' replaced by ',')
 *   "now"    -> reply the host's clock
 *   "error"  -> send_error(sender, MALFORMED_MESSAGE, "bad")
 *   "events" -> reply how many events were seen
 *   "level"  -> reply log_enabled(DEBUG)
 *   anything else -> echo it back, prefixed by the config text
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "yonexus_plugin.h"

typedef struct {
    const yonexus_host_api *host;
    char prefix[64];
    size_t prefix_len;
    unsigned long events;
} instance;

static yonexus_buf make_buf(const char *text, size_t len) {
    yonexus_buf b = {NULL, 0, 0};
    b.ptr = (uint8_t *)malloc(len ? len : 1);
    if (b.ptr) {
        memcpy(b.ptr, text, len);
        b.len = len;
        b.cap = len;
    }
    return b;
}

static int is(yonexus_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.len == n && (n == 0 || memcmp(s.ptr, lit, n) == 0);
}

static yonexus_status reply(instance *in, yonexus_str rule, yonexus_str to, const char *text,
                            size_t len) {
    char buf[512];
    size_t total = in->prefix_len + len;
    if (total > sizeof buf) {
        return YONEXUS_STATUS_INVALID;
    }
    memcpy(buf, in->prefix, in->prefix_len);
    if (len) {
        memcpy(buf + in->prefix_len, text, len);
    }
    return in->host->send_to(in->host->ctx, to, rule, yonexus_str_of(buf, total));
}

static void rt_free_buf(yonexus_buf b) { free(b.ptr); }

static yonexus_status rt_create(const yonexus_host_api *host, yonexus_str config, void **out,
                                yonexus_buf *err) {
    instance *in;
    if (host == NULL || out == NULL || host->struct_size < YONEXUS_HOST_API_V1_0_SIZE) {
        return YONEXUS_STATUS_INVALID;
    }
    if (is(config, "fail")) {
        if (err) {
            *err = make_buf("create refused", 14);
        }
        return YONEXUS_STATUS_ERROR;
    }
    if (config.len > 64) {
        return YONEXUS_STATUS_INVALID;
    }
    in = (instance *)calloc(1, sizeof *in);
    if (in == NULL) {
        return YONEXUS_STATUS_ERROR;
    }
    in->host = host;
    if (config.len) {
        memcpy(in->prefix, config.ptr, config.len);
    }
    in->prefix_len = config.len;
    host->log(host->ctx, YONEXUS_LOG_INFO, yonexus_str_of("created", 7));
    *out = in;
    return YONEXUS_STATUS_OK;
}

static yonexus_status rt_on_message(void *p, yonexus_str rule, yonexus_str sender,
                                    yonexus_str content, yonexus_buf *err) {
    instance *in = (instance *)p;
    const yonexus_host_api *h = in->host;
    char text[256];
    int n;
    if (is(content, "fail")) {
        if (err) {
            *err = make_buf("failed on purpose", 17);
        }
        return YONEXUS_STATUS_ERROR;
    }
    if (is(content, "all")) {
        uint64_t reached = h->broadcast(h->ctx, rule, yonexus_str_of("everyone", 8), sender);
        n = snprintf(text, sizeof text, "broadcast:%llu", (unsigned long long)reached);
        return reply(in, rule, sender, text, (size_t)n) == YONEXUS_STATUS_OK ? YONEXUS_STATUS_OK
                                                                              : YONEXUS_STATUS_ERROR;
    }
    if (is(content, "who")) {
        yonexus_buf list = {NULL, 0, 0};
        yonexus_status st = h->connected_followers(h->ctx, &list);
        size_t i, len = list.len < sizeof text ? list.len : sizeof text;
        for (i = 0; i < len; i++) {
            text[i] = list.ptr[i] == '\n' ? ',' : (char)list.ptr[i];
        }
        h->free_buf(list); /* host-owned: the host frees it */
        if (st != YONEXUS_STATUS_OK) {
            return st;
        }
        return reply(in, rule, sender, text, len);
    }
    if (is(content, "now")) {
        n = snprintf(text, sizeof text, "%lld", (long long)h->now(h->ctx));
        return reply(in, rule, sender, text, (size_t)n);
    }
    if (is(content, "error")) {
        return h->send_error(h->ctx, sender, YONEXUS_ERR_MALFORMED_MESSAGE,
                             yonexus_str_of("bad", 3));
    }
    if (is(content, "events")) {
        n = snprintf(text, sizeof text, "%lu", in->events);
        return reply(in, rule, sender, text, (size_t)n);
    }
    if (is(content, "level")) {
        n = snprintf(text, sizeof text, "%u", (unsigned)h->log_enabled(h->ctx, YONEXUS_LOG_DEBUG));
        return reply(in, rule, sender, text, (size_t)n);
    }
    return reply(in, rule, sender, (const char *)content.ptr, content.len);
}

static yonexus_status rt_on_event(void *p, uint32_t kind, yonexus_str identifier,
                                  yonexus_str status, yonexus_buf *err) {
    instance *in = (instance *)p;
    (void)err;
    in->events++;
    if (kind == YONEXUS_EVENT_LIVENESS_CHANGED && is(status, "unstable")) {
        in->host->send_to(in->host->ctx, identifier, yonexus_str_of("ev", 2), status);
    }
    return YONEXUS_STATUS_OK;
}

static void rt_destroy(void *p) { free(p); }

static const yonexus_plugin_vtable vtable = {
    sizeof(yonexus_plugin_vtable), YONEXUS_ABI_MINOR, 0, rt_create, rt_on_message,
    rt_destroy, rt_free_buf, rt_on_event,
};

YONEXUS_EXPORT_PLUGIN("roundtrip", "0.0.1", vtable, YONEXUS_FLAG_NON_BLOCKING);
