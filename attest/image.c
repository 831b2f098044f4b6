/* OS-image measurement manifests and their verifier (attest/image.h). */
#include "attest/image.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fetch.h"
#include "common/file.h"
#include "common/hex.h"
#include "attest/attest.h"

#define IMG_PLACEHOLDER "{OS_IMAGE_HASH}"
#define IMG_NAME_MAX 256u /* manifest "image" */
#define IMG_VMCONFIG_MAX (64u * 1024u)
#define IMG_PATH_MAX 4096u

/* vm_config keys that shape the measurements (the reference's VmConfig fields dstack-mr uses),
 * with their serde defaults and the JSON types a manifest may give them. */
enum shape_type { SHAPE_UINT, SHAPE_BOOL, SHAPE_OPT_BOOL, SHAPE_STR, SHAPE_OPT_STR };

static const struct shape_key {
    const char *name;
    enum shape_type type;
} shape_keys[] = {
    {"cpu_count", SHAPE_UINT},
    {"memory_size", SHAPE_UINT},
    {"qemu_single_pass_add_pages", SHAPE_OPT_BOOL},
    {"pic", SHAPE_OPT_BOOL},
    {"qemu_version", SHAPE_OPT_STR},
    {"pci_hole64_size", SHAPE_UINT},
    {"hugepages", SHAPE_BOOL},
    {"num_gpus", SHAPE_UINT},
    {"num_nvswitches", SHAPE_UINT},
    {"hotplug_off", SHAPE_BOOL},
    {"image", SHAPE_OPT_STR},
    {"host_share_mode", SHAPE_STR},
    {"ovmf_variant", SHAPE_OPT_STR},
};

struct img_entry {
    json_t *shape; /* object of shape keys; owned */
    struct kms_image_mrs mrs;
};

struct kms_image_manifest {
    uint8_t hash[32];
    size_t n;
    struct img_entry e[KMS_IMAGE_MAX_ENTRIES];
};

static const struct shape_key *shape_key_find(const char *name)
{
    for (size_t i = 0; i < sizeof(shape_keys) / sizeof(shape_keys[0]); i++) {
        if (strcmp(shape_keys[i].name, name) == 0)
            return &shape_keys[i];
    }
    return NULL;
}

static int shape_value_ok(enum shape_type t, const json_t *v)
{
    switch (t) {
    case SHAPE_UINT:
        return json_is_integer(v) && json_integer_value(v) >= 0;
    case SHAPE_BOOL:
        return json_is_boolean(v);
    case SHAPE_OPT_BOOL:
        return json_is_boolean(v) || json_is_null(v);
    case SHAPE_STR:
        return json_is_string(v);
    case SHAPE_OPT_STR:
        return json_is_string(v) || json_is_null(v);
    }
    return 0;
}

/* The serde default of a key the vm_config lacks. Caller decrefs. */
static json_t *shape_default(enum shape_type t)
{
    switch (t) {
    case SHAPE_UINT:
        return json_integer(0);
    case SHAPE_BOOL:
        return json_false();
    case SHAPE_STR:
        return json_string("");
    default:
        return json_null();
    }
}

static int hex_field(json_t *o, const char *key, uint8_t *out, size_t n, const char *where)
{
    const char *s = json_string_value(json_object_get(o, key));

    if (s == NULL || strlen(s) != 2 * n || kms_hex_decode_exact(s, out, n) < 0)
        return kms_err_set(KMS_ERR_PARSE, "%s: %s must be %zu hex digits", where, key, 2 * n);
    return 0;
}

static int parse_shape(json_t *shape, const char *where)
{
    const char *k;
    json_t *v;

    if (!json_is_object(shape))
        return kms_err_set(KMS_ERR_PARSE, "%s: vm_shape must be a JSON object", where);
    json_object_foreach(shape, k, v)
    {
        const struct shape_key *sk = shape_key_find(k);

        if (sk == NULL)
            return kms_err_set(KMS_ERR_PARSE, "%s: vm_shape key %.64s is not a VM shape field",
                               where, k);
        if (!shape_value_ok(sk->type, v))
            return kms_err_set(KMS_ERR_PARSE, "%s: vm_shape %s has the wrong type", where, k);
    }
    return 0;
}

static int parse_entry(json_t *o, size_t idx, struct img_entry *e)
{
    static const char *const regs[3] = {"rtmr0", "rtmr1", "rtmr2"};
    char where[48];
    const char *k;
    json_t *v, *shape;
    int rc = 0;

    snprintf(where, sizeof(where), "measurements[%zu]", idx);
    KMS_ENSURE(json_is_object(o), KMS_ERR_PARSE, "%s is not a JSON object", where);
    json_object_foreach(o, k, v)
    {
        KMS_ENSURE(strcmp(k, "vm_shape") == 0 || strcmp(k, "mrtd") == 0 ||
                       strcmp(k, "rtmr0") == 0 || strcmp(k, "rtmr1") == 0 ||
                       strcmp(k, "rtmr2") == 0,
                   KMS_ERR_PARSE, "%s: unknown key %.64s", where, k);
    }
    KMS_GUARD(hex_field(o, "mrtd", e->mrs.mrtd, 48, where));
    for (size_t i = 0; i < 3; i++)
        KMS_GUARD(hex_field(o, regs[i], e->mrs.rtmr[i], 48, where));
    shape = json_object_get(o, "vm_shape");
    if (shape == NULL) {
        e->shape = json_object();
        KMS_GUARD_PTR(e->shape);
    } else {
        KMS_GUARD(parse_shape(shape, where));
        e->shape = json_incref(shape);
    }
out:
    return rc;
}

void kms_image_manifest_free(struct kms_image_manifest *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++)
        json_decref(m->e[i].shape);
    free(m);
}

int kms_image_manifest_parse(const char *text, size_t len, const uint8_t hash[32],
                             struct kms_image_manifest **out)
{
    struct kms_image_manifest *m = NULL;
    json_error_t jerr;
    json_t *root = NULL, *ver, *img, *arr, *v;
    const char *k;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(len <= KMS_IMAGE_MANIFEST_MAX, KMS_ERR_TOOBIG,
               "measurement manifest exceeds %u bytes", KMS_IMAGE_MANIFEST_MAX);
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    KMS_ENSURE(json_is_object(root), KMS_ERR_PARSE, "measurement manifest is not a JSON object%s%s",
               root == NULL ? ": " : "", root == NULL ? jerr.text : "");
    json_object_foreach(root, k, v)
    {
        KMS_ENSURE(strcmp(k, "version") == 0 || strcmp(k, "os_image_hash") == 0 ||
                       strcmp(k, "image") == 0 || strcmp(k, "measurements") == 0,
                   KMS_ERR_PARSE, "measurement manifest: unknown key %.64s", k);
    }
    ver = json_object_get(root, "version");
    KMS_ENSURE(json_is_integer(ver) && json_integer_value(ver) == 1, KMS_ERR_PARSE,
               "measurement manifest: version must be 1");
    img = json_object_get(root, "image");
    KMS_ENSURE(img == NULL || (json_is_string(img) && json_string_length(img) <= IMG_NAME_MAX),
               KMS_ERR_PARSE, "measurement manifest: image must be a string of at most %u bytes",
               IMG_NAME_MAX);
    arr = json_object_get(root, "measurements");
    KMS_ENSURE(json_is_array(arr) && json_array_size(arr) > 0 &&
                   json_array_size(arr) <= KMS_IMAGE_MAX_ENTRIES,
               KMS_ERR_PARSE,
               "measurement manifest: measurements must be an array of 1 to %u "
               "entries",
               KMS_IMAGE_MAX_ENTRIES);
    m = calloc(1, sizeof(*m));
    KMS_GUARD_PTR(m);
    KMS_GUARD(hex_field(root, "os_image_hash", m->hash, 32, "measurement manifest"));
    if (hash != NULL && memcmp(hash, m->hash, 32) != 0) {
        char want[65];

        kms_hex_encode(hash, 32, want);
        KMS_ENSURE(0, KMS_ERR_ATT_IMAGE,
                   "the measurement manifest found for OS image %s names another os_image_hash",
                   want);
    }
    for (size_t i = 0; i < json_array_size(arr); i++) {
        KMS_GUARD(parse_entry(json_array_get(arr, i), i, &m->e[i]));
        m->n = i + 1;
    }
    *out = m;
    m = NULL;
out:
    kms_image_manifest_free(m);
    json_decref(root);
    return rc;
}

/* 1 when every key of shape equals vmc's value (or its default when vmc lacks it). */
static int shape_matches(json_t *shape, json_t *vmc)
{
    const char *k;
    json_t *want;

    json_object_foreach(shape, k, want)
    {
        json_t *have = json_object_get(vmc, k);
        json_t *def = NULL;
        int eq;

        if (have == NULL) {
            def = shape_default(shape_key_find(k)->type);
            have = def;
        }
        eq = have != NULL && json_equal(have, want);
        json_decref(def);
        if (!eq)
            return 0;
    }
    return 1;
}

static int mrs_compare(const struct kms_image_mrs *want, const struct kms_image_mrs *have)
{
    static const char *const names[4] = {"MRTD", "RTMR0", "RTMR1", "RTMR2"};
    const uint8_t *w[4] = {want->mrtd, want->rtmr[0], want->rtmr[1], want->rtmr[2]};
    const uint8_t *h[4] = {have->mrtd, have->rtmr[0], have->rtmr[1], have->rtmr[2]};
    char we[97], he[97];

    for (size_t i = 0; i < 4; i++) {
        if (memcmp(w[i], h[i], 48) != 0) {
            kms_hex_encode(w[i], 48, we);
            kms_hex_encode(h[i], 48, he);
            return kms_err_set(KMS_ERR_ATT_IMAGE,
                               "MRs do not match: %s mismatch: expected=%s, actual=%s", names[i],
                               we, he);
        }
    }
    return 0;
}

int kms_image_manifest_check(const struct kms_image_manifest *m, const char *vm_config,
                             const struct kms_image_mrs *actual)
{
    const struct img_entry *first = NULL;
    json_t *vmc = NULL;
    char hex[65];
    int rc = 0;

    KMS_ENSURE(vm_config != NULL && strlen(vm_config) <= IMG_VMCONFIG_MAX, KMS_ERR_ATT_FORMAT,
               "vm_config is missing or too large");
    vmc = json_loads(vm_config, 0, NULL);
    KMS_ENSURE(json_is_object(vmc), KMS_ERR_ATT_FORMAT, "vm_config is not a JSON object");
    for (size_t i = 0; i < m->n; i++) {
        if (!shape_matches(m->e[i].shape, vmc))
            continue;
        if (memcmp(&m->e[i].mrs, actual, sizeof(*actual)) == 0)
            goto out;
        if (first == NULL)
            first = &m->e[i];
    }
    kms_hex_encode(m->hash, 32, hex);
    if (first != NULL) {
        rc = mrs_compare(&first->mrs, actual);
        goto out;
    }
    {
        json_t *cpu = json_object_get(vmc, "cpu_count");
        json_t *mem = json_object_get(vmc, "memory_size");

        rc = kms_err_set(KMS_ERR_ATT_IMAGE,
                         "the measurement manifest of OS image %s has no entry for this VM shape "
                         "(cpu_count %lld, memory_size %lld, ...)",
                         hex, cpu != NULL ? (long long)json_integer_value(cpu) : 0LL,
                         mem != NULL ? (long long)json_integer_value(mem) : 0LL);
    }
out:
    json_decref(vmc);
    return rc;
}

static json_t *hex_json(const uint8_t *p, size_t n)
{
    char h[97];

    kms_hex_encode(p, n, h);
    return json_string(h);
}

int kms_image_manifest_build(const char *existing, const uint8_t hash[32], const char *image,
                             const char *vm_shape, const struct kms_image_mrs *mrs, char **out)
{
    struct kms_image_manifest *check = NULL;
    json_t *root = NULL, *shape = NULL, *ent = NULL, *arr;
    int rc = 0;

    *out = NULL;
    if (existing != NULL) {
        /* Validates it and that it is the same image. */
        KMS_GUARD(kms_image_manifest_parse(existing, strlen(existing), hash, &check));
        KMS_ENSURE(check->n < KMS_IMAGE_MAX_ENTRIES, KMS_ERR_TOOBIG,
                   "the manifest already holds %u entries", KMS_IMAGE_MAX_ENTRIES);
        root = json_loads(existing, 0, NULL);
        KMS_GUARD_PTR(root);
    } else {
        root = json_pack("{s:i,s:o,s:[]}", "version", 1, "os_image_hash", hex_json(hash, 32),
                         "measurements");
        KMS_GUARD_PTR(root);
        if (image != NULL) {
            KMS_ENSURE(strlen(image) <= IMG_NAME_MAX, KMS_ERR_INVAL,
                       "image name longer than %u bytes", IMG_NAME_MAX);
            json_object_set_new(root, "image", json_string(image));
        }
    }
    if (vm_shape != NULL && vm_shape[0] != '\0') {
        shape = json_loads(vm_shape, 0, NULL);
        KMS_ENSURE(shape != NULL, KMS_ERR_PARSE, "vm shape is not JSON");
        KMS_GUARD(parse_shape(shape, "vm shape"));
    } else {
        shape = json_object();
        KMS_GUARD_PTR(shape);
    }
    ent = json_pack("{s:O,s:o,s:o,s:o,s:o}", "vm_shape", shape, "mrtd", hex_json(mrs->mrtd, 48),
                    "rtmr0", hex_json(mrs->rtmr[0], 48), "rtmr1", hex_json(mrs->rtmr[1], 48),
                    "rtmr2", hex_json(mrs->rtmr[2], 48));
    KMS_GUARD_PTR(ent);
    arr = json_object_get(root, "measurements");
    KMS_ENSURE(json_array_append(arr, ent) == 0, KMS_ERR_NOMEM, "out of memory");
    *out = json_dumps(root, JSON_INDENT(2));
    KMS_GUARD_PTR(*out);
out:
    kms_image_manifest_free(check);
    json_decref(ent);
    json_decref(shape);
    json_decref(root);
    return rc;
}

/* ---------------------------------------------------------------- the verifier */

struct img_cached {
    uint8_t hash[32];
    int from_sim; /* loaded from the simulated TEE's directory: serves simulated evidence only */
    unsigned long used;
    struct kms_image_manifest *m; /* NULL: free slot */
};

struct kms_image_verifier {
    char *dir;
    char *url_template;
    char *sim_dir;
    long timeout_ms;
    pthread_mutex_t lock;
    unsigned long tick;
    unsigned long loads;
    struct img_cached cache[KMS_IMAGE_CACHE_MAX];
};

static int dup_opt(const char *s, char **out)
{
    *out = NULL;
    if (s == NULL || s[0] == '\0')
        return 0;
    *out = strdup(s);
    return *out != NULL ? 0 : kms_err_set(KMS_ERR_NOMEM, "out of memory");
}

int kms_image_verifier_new(const struct kms_image_cfg *cfg, struct kms_image_verifier **out)
{
    struct kms_image_verifier *iv = NULL;
    const char *u = cfg->url_template;
    int rc = 0;

    *out = NULL;
    if (u != NULL && u[0] != '\0') {
        KMS_ENSURE(strlen(u) <= KMS_IMAGE_URL_MAX, KMS_ERR_INVAL,
                   "the image manifest URL template is longer than %u bytes", KMS_IMAGE_URL_MAX);
        KMS_ENSURE(strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0, KMS_ERR_INVAL,
                   "the image manifest URL template must be http:// or https://");
        KMS_ENSURE(strstr(u, IMG_PLACEHOLDER) != NULL, KMS_ERR_INVAL,
                   "the image manifest URL template must contain %s", IMG_PLACEHOLDER);
    }
    KMS_ENSURE(cfg->timeout_ms >= 0, KMS_ERR_INVAL, "negative image manifest fetch timeout");
    iv = calloc(1, sizeof(*iv));
    KMS_GUARD_PTR(iv);
    pthread_mutex_init(&iv->lock, NULL);
    iv->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : KMS_IMAGE_TIMEOUT_MS_DEFAULT;
    KMS_GUARD(dup_opt(cfg->dir, &iv->dir));
    KMS_GUARD(dup_opt(cfg->url_template, &iv->url_template));
    KMS_GUARD(dup_opt(cfg->sim_dir, &iv->sim_dir));
    *out = iv;
    iv = NULL;
out:
    kms_image_verifier_free(iv);
    return rc;
}

void kms_image_verifier_free(struct kms_image_verifier *iv)
{
    if (iv == NULL)
        return;
    for (size_t i = 0; i < KMS_IMAGE_CACHE_MAX; i++)
        kms_image_manifest_free(iv->cache[i].m);
    pthread_mutex_destroy(&iv->lock);
    free(iv->dir);
    free(iv->url_template);
    free(iv->sim_dir);
    free(iv);
}

/* Under the lock: the cached manifest of hash usable for this evidence, or NULL. */
static struct img_cached *cache_find(struct kms_image_verifier *iv, const uint8_t hash[32], int sim)
{
    for (size_t i = 0; i < KMS_IMAGE_CACHE_MAX; i++) {
        struct img_cached *c = &iv->cache[i];

        if (c->m != NULL && memcmp(c->hash, hash, 32) == 0 && (sim || !c->from_sim))
            return c;
    }
    return NULL;
}

/* Under the lock: stores m (taken) for hash, replacing an entry of the same origin, else a
 * free slot, else the least recently used. */
static void cache_put(struct kms_image_verifier *iv, const uint8_t hash[32], int from_sim,
                      struct kms_image_manifest *m)
{
    struct img_cached *slot = NULL;

    for (size_t i = 0; i < KMS_IMAGE_CACHE_MAX && slot == NULL; i++) {
        struct img_cached *c = &iv->cache[i];

        if (c->m != NULL && memcmp(c->hash, hash, 32) == 0 && c->from_sim == from_sim)
            slot = c;
    }
    for (size_t i = 0; i < KMS_IMAGE_CACHE_MAX && slot == NULL; i++) {
        if (iv->cache[i].m == NULL)
            slot = &iv->cache[i];
    }
    if (slot == NULL) {
        slot = &iv->cache[0];
        for (size_t i = 1; i < KMS_IMAGE_CACHE_MAX; i++) {
            if (iv->cache[i].used < slot->used)
                slot = &iv->cache[i];
        }
    }
    kms_image_manifest_free(slot->m);
    memcpy(slot->hash, hash, 32);
    slot->from_sim = from_sim;
    slot->used = ++iv->tick;
    slot->m = m;
}

/* dir/<hex>.json: 0 and *m when present and valid; 1 when absent; < 0 when unreadable or
 * invalid (fail closed: a broken manifest is not skipped). */
static int load_file(const char *dir, const uint8_t hash[32], const char *hex,
                     struct kms_image_manifest **m)
{
    char path[IMG_PATH_MAX];
    uint8_t *buf = NULL;
    size_t len = 0;
    int n, rc = 0;

    n = snprintf(path, sizeof(path), "%s/%s.json", dir, hex);
    KMS_ENSURE(n > 0 && (size_t)n < sizeof(path), KMS_ERR_INVAL, "image manifest path too long");
    if (!kms_file_exists(path))
        return 1;
    rc = kms_file_read(path, KMS_IMAGE_MANIFEST_MAX, &buf, &len);
    if (rc < 0) {
        rc = kms_err_wrap(KMS_ERR_ATT_IMAGE, "cannot read the measurement manifest %s", path);
        goto out;
    }
    rc = kms_image_manifest_parse((const char *)buf, len, hash, m);
    if (rc < 0)
        rc = kms_err_wrap(KMS_ERR_ATT_IMAGE, "invalid measurement manifest %s", path);
out:
    free(buf);
    return rc;
}

/* The URL template with every placeholder replaced by hex. */
static int expand_url(const char *tmpl, const char *hex, char *out, size_t outlen)
{
    size_t o = 0, pl = strlen(IMG_PLACEHOLDER), hl = strlen(hex);
    const char *p = tmpl;

    while (*p != '\0') {
        const char *at = strstr(p, IMG_PLACEHOLDER);
        size_t lit = at != NULL ? (size_t)(at - p) : strlen(p);

        if (outlen - o <= lit)
            return kms_err_set(KMS_ERR_INVAL, "image manifest URL too long");
        memcpy(out + o, p, lit);
        o += lit;
        p += lit;
        if (at == NULL)
            break;
        if (outlen - o <= hl)
            return kms_err_set(KMS_ERR_INVAL, "image manifest URL too long");
        memcpy(out + o, hex, hl);
        o += hl;
        p += pl;
    }
    out[o] = '\0';
    return 0;
}

/* Fetches the manifest: 0 and *m; 1 on HTTP 404; < 0 on any other failure. */
static int load_url(const struct kms_image_verifier *iv, const uint8_t hash[32], const char *hex,
                    struct kms_image_manifest **m)
{
    char url[KMS_IMAGE_URL_MAX + 256];
    struct kms_fetch_req req;
    struct kms_fetch_resp resp;
    int rc = 0;

    memset(&req, 0, sizeof(req));
    memset(&resp, 0, sizeof(resp));
    KMS_GUARD(expand_url(iv->url_template, hex, url, sizeof(url)));
    req.url = url;
    req.timeout_ms = iv->timeout_ms;
    req.max_body = KMS_IMAGE_MANIFEST_MAX;
    req.user_agent = "kmsd";
    rc = kms_fetch(&req, &resp);
    if (rc < 0) {
        rc = kms_err_wrap(rc, "Failed to download the measurement manifest of OS image %s", hex);
        goto out;
    }
    if (resp.status == 404) {
        rc = 1;
        goto out;
    }
    KMS_ENSURE(resp.status == 200, KMS_ERR_ATT_IMAGE,
               "Failed to download the measurement manifest of OS image %s: HTTP status %ld", hex,
               resp.status);
    rc = kms_image_manifest_parse((const char *)resp.body.data, resp.body.len, hash, m);
    if (rc < 0)
        rc = kms_err_wrap(KMS_ERR_ATT_IMAGE,
                          "invalid measurement manifest downloaded for OS image %s", hex);
out:
    kms_fetch_resp_free(&resp);
    return rc;
}

/* From the sources in order: 0 and *m (*from_sim), 1 when none has it, < 0 on failure. */
static int load_manifest(const struct kms_image_verifier *iv, const uint8_t hash[32],
                         const char *hex, int sim, struct kms_image_manifest **m, int *from_sim)
{
    char simdir[IMG_PATH_MAX];
    int rc = 1;

    *from_sim = 0;
    if (sim && iv->sim_dir != NULL) {
        int n = snprintf(simdir, sizeof(simdir), "%s/%s", iv->sim_dir, KMS_IMAGE_SIM_SUBDIR);

        if (n < 0 || (size_t)n >= sizeof(simdir))
            return kms_err_set(KMS_ERR_INVAL, "simulation directory path too long");
        rc = load_file(simdir, hash, hex, m);
        if (rc == 0)
            *from_sim = 1;
    }
    if (rc == 1 && iv->dir != NULL)
        rc = load_file(iv->dir, hash, hex, m);
    if (rc == 1 && iv->url_template != NULL)
        rc = load_url(iv, hash, hex, m);
    return rc;
}

int kms_image_verify(struct kms_image_verifier *iv, const uint8_t *hash, size_t hash_len,
                     const char *vm_config, const struct kms_image_mrs *actual, int sim)
{
    struct kms_image_manifest *m = NULL;
    struct img_cached *c;
    char hex[65];
    int from_sim = 0;
    int rc = 0;

    KMS_ENSURE(hash_len != 0, KMS_ERR_ATT_IMAGE,
               "vm_config has no os_image_hash, so no image measurements to check against");
    KMS_ENSURE(hash_len == 32, KMS_ERR_ATT_IMAGE, "os_image_hash must be 32 bytes, got %zu",
               hash_len);
    kms_hex_encode(hash, 32, hex);
    pthread_mutex_lock(&iv->lock);
    c = cache_find(iv, hash, sim);
    if (c != NULL) {
        c->used = ++iv->tick;
        rc = kms_image_manifest_check(c->m, vm_config, actual);
        pthread_mutex_unlock(&iv->lock);
        goto out;
    }
    pthread_mutex_unlock(&iv->lock);
    /* Outside the lock: a fetch may take up to the timeout. Two concurrent misses may both
     * load; the later one replaces the earlier in the cache. */
    rc = load_manifest(iv, hash, hex, sim, &m, &from_sim);
    if (rc == 1) {
        rc = kms_err_set(KMS_ERR_ATT_IMAGE,
                         "no measurement manifest for OS image %s (looked in%s%s%s)", hex,
                         sim && iv->sim_dir != NULL ? " the simulated TEE's manifests," : "",
                         iv->dir != NULL ? " --image-manifest-dir," : "",
                         iv->url_template != NULL ? " --image-manifest-url" : " no other source");
        goto out;
    }
    KMS_GUARD(rc);
    pthread_mutex_lock(&iv->lock);
    iv->loads++;
    cache_put(iv, hash, from_sim, m);
    rc = kms_image_manifest_check(m, vm_config, actual);
    m = NULL;
    pthread_mutex_unlock(&iv->lock);
out:
    kms_image_manifest_free(m);
    return rc;
}

size_t kms_image_cache_clear(struct kms_image_verifier *iv, const uint8_t *hash, size_t hash_len)
{
    size_t n = 0;

    if (iv == NULL || (hash != NULL && hash_len != 32))
        return 0;
    pthread_mutex_lock(&iv->lock);
    for (size_t i = 0; i < KMS_IMAGE_CACHE_MAX; i++) {
        struct img_cached *c = &iv->cache[i];

        if (c->m == NULL || (hash != NULL && memcmp(c->hash, hash, 32) != 0))
            continue;
        kms_image_manifest_free(c->m);
        memset(c, 0, sizeof(*c));
        n++;
    }
    pthread_mutex_unlock(&iv->lock);
    return n;
}

unsigned long kms_image_loads(struct kms_image_verifier *iv)
{
    unsigned long n;

    pthread_mutex_lock(&iv->lock);
    n = iv->loads;
    pthread_mutex_unlock(&iv->lock);
    return n;
}
