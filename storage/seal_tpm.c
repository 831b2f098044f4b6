/*
 * "tpm" seal provider (DESIGN.md §7): the KEK is a TPM2 keyedhash (sealed data) object under a
 * storage primary key that is recreated in the owner hierarchy on every open (fixed ECC P-256 SRK
 * template, so no persistent handle is needed), with the authorization policy PolicyPCR over the
 * configured PCR selection. The sealed public/private parts are kept in a blob file; the TPM's
 * integrity check and the PCR policy decide whether it unseals. Sessions are salted with the
 * primary and use AES-128-CFB parameter encryption, so the KEK never crosses the bus in clear.
 *
 * Blob file (version 1, all lengths u16 big-endian, every section bounded below):
 *   "kmsd-tpm" | u16 version | name(primary) | TPML_PCR_SELECTION | u16 n, n x PCR value at
 *   seal time (diagnosis only; the TPM enforces the policy) | TPM2B_PUBLIC | TPM2B_PRIVATE |
 *   sha256(all before)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>

#include "common/buf.h"
#include "common/file.h"
#include "common/log.h"
#include "common/tpm.h"
#include "storage/storage.h"

#define KEK_LEN 32
#define BLOB_MAGIC "kmsd-tpm"
#define BLOB_MAGIC_LEN 8
#define BLOB_VERSION 1
#define BLOB_MAX 8192u    /* a v1 blob is well under 1 KiB */
#define SECTION_MAX 1024u /* largest marshalled section we accept */
#define MAX_BANKS 4
#define NUM_PCRS 24
#define SPEC_MAX 256
#define CHECKSUM_LEN 32
#define PATH_MAX_LEN 4096

struct tpm {
    const char *tcti_name;
    struct kms_tpm conn;
    ESYS_TR primary;
    TPM2B_NAME primary_name;
};

struct blob {
    TPM2B_NAME primary_name;
    TPML_PCR_SELECTION sel;
    size_t npcr;
    TPM2B_DIGEST pcr[MAX_BANKS * NUM_PCRS]; /* values at seal time, in selection order */
    TPM2B_PUBLIC pub;
    TPM2B_PRIVATE priv;
};

/* ---- errors ---- */

/* TPM_RC_POLICY_FAIL from the TPM itself, whatever session/parameter number it carries. */
static int is_policy_fail(TSS2_RC r)
{
    return (r & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER && (r & TPM2_RC_FMT1) != 0 &&
           (r & (TPM2_RC_FMT1 | 0x3f)) == TPM2_RC_POLICY_FAIL;
}

/* ---- PCR selection spec: "sha256:0,2,14" or "sha1:0+sha256:0,7" ---- */

static const struct {
    const char *name;
    TPMI_ALG_HASH alg;
    uint16_t len;
} banks[] = {
    {"sha1", TPM2_ALG_SHA1, 20},
    {"sha256", TPM2_ALG_SHA256, 32},
    {"sha384", TPM2_ALG_SHA384, 48},
    {"sha512", TPM2_ALG_SHA512, 64},
};

static int bank_find(TPMI_ALG_HASH alg)
{
    for (size_t i = 0; i < sizeof(banks) / sizeof(banks[0]); i++)
        if (banks[i].alg == alg)
            return (int)i;
    return -1;
}

static int pcr_is_set(const TPMS_PCR_SELECTION *s, unsigned pcr)
{
    return (s->pcrSelect[pcr / 8] >> (pcr % 8)) & 1;
}

/* Checks a selection (from the spec or a blob): known banks, no repeats, 3-byte bitmaps,
 * at least one PCR in each bank. */
static int sel_check(const TPML_PCR_SELECTION *sel, const char *where)
{
    if (sel->count < 1 || sel->count > MAX_BANKS)
        return kms_err_set(KMS_ERR_INVAL, "%s: PCR selection must name 1..%d banks", where,
                           MAX_BANKS);
    for (uint32_t i = 0; i < sel->count; i++) {
        const TPMS_PCR_SELECTION *s = &sel->pcrSelections[i];

        if (bank_find(s->hash) < 0)
            return kms_err_set(KMS_ERR_INVAL, "%s: unsupported PCR bank 0x%x", where,
                               (unsigned)s->hash);
        for (uint32_t j = 0; j < i; j++)
            if (sel->pcrSelections[j].hash == s->hash)
                return kms_err_set(KMS_ERR_INVAL, "%s: PCR bank %s appears twice", where,
                                   banks[bank_find(s->hash)].name);
        if (s->sizeofSelect != 3 || (s->pcrSelect[0] | s->pcrSelect[1] | s->pcrSelect[2]) == 0)
            return kms_err_set(KMS_ERR_INVAL, "%s: PCR bank %s selects no PCR 0..23", where,
                               banks[bank_find(s->hash)].name);
    }
    return 0;
}

static int parse_pcrs(const char *spec, TPML_PCR_SELECTION *sel)
{
    char buf[SPEC_MAX];
    char *save = NULL;
    char *part;
    int rc = 0;

    memset(sel, 0, sizeof(*sel));
    KMS_ENSURE(strlen(spec) < sizeof(buf), KMS_ERR_INVAL, "PCR selection is too long");
    snprintf(buf, sizeof(buf), "%s", spec);
    for (part = strtok_r(buf, "+", &save); part != NULL; part = strtok_r(NULL, "+", &save)) {
        char *colon = strchr(part, ':');
        char *save2 = NULL;
        TPMS_PCR_SELECTION *s;
        int b = -1;

        KMS_ENSURE(colon != NULL, KMS_ERR_INVAL,
                   "PCR selection \"%s\": expected BANK:PCR[,PCR...] (e.g. sha256:0,2,14)", spec);
        *colon = '\0';
        for (size_t i = 0; i < sizeof(banks) / sizeof(banks[0]); i++)
            if (strcmp(part, banks[i].name) == 0)
                b = (int)i;
        KMS_ENSURE(b >= 0, KMS_ERR_INVAL,
                   "PCR selection \"%s\": unknown bank \"%s\" (use sha1, sha256, sha384, sha512)",
                   spec, part);
        KMS_ENSURE(sel->count < MAX_BANKS, KMS_ERR_INVAL,
                   "PCR selection \"%s\": more than %d banks", spec, MAX_BANKS);
        s = &sel->pcrSelections[sel->count++];
        s->hash = banks[b].alg;
        s->sizeofSelect = 3;
        for (char *n = strtok_r(colon + 1, ",", &save2); n != NULL;
             n = strtok_r(NULL, ",", &save2)) {
            char *end = NULL;
            long v;

            errno = 0;
            v = strtol(n, &end, 10);
            KMS_ENSURE(n[0] >= '0' && n[0] <= '9' && end != n && *end == '\0' && errno == 0 &&
                           v >= 0 && v < NUM_PCRS,
                       KMS_ERR_INVAL, "PCR selection \"%s\": \"%s\" is not a PCR index 0..23", spec,
                       n);
            s->pcrSelect[v / 8] |= (uint8_t)(1u << (v % 8));
        }
    }
    KMS_GUARD(sel_check(sel, "--seal-pcrs"));
out:
    if (rc == KMS_ERR_INVAL && strstr(kms_err_detail(), spec) == NULL)
        rc = kms_err_wrap(KMS_ERR_INVAL, "PCR selection \"%s\"", spec);
    return rc;
}

/* Canonical text of a selection, for messages. */
static void sel_str(const TPML_PCR_SELECTION *sel, char *out, size_t cap)
{
    size_t n = 0;

    out[0] = '\0';
    for (uint32_t i = 0; i < sel->count && n < cap; i++) {
        const TPMS_PCR_SELECTION *s = &sel->pcrSelections[i];
        int b = bank_find(s->hash);
        char sep = ':';

        n += (size_t)snprintf(out + n, cap - n, "%s%s", i > 0 ? "+" : "",
                              b >= 0 ? banks[b].name : "?");
        for (unsigned p = 0; p < NUM_PCRS && n < cap; p++) {
            if (!pcr_is_set(s, p))
                continue;
            n += (size_t)snprintf(out + n, cap - n, "%c%u", sep, p);
            sep = ',';
        }
    }
}

static int sel_equal(const TPML_PCR_SELECTION *a, const TPML_PCR_SELECTION *b)
{
    if (a->count != b->count)
        return 0;
    for (uint32_t i = 0; i < a->count; i++)
        if (a->pcrSelections[i].hash != b->pcrSelections[i].hash ||
            memcmp(a->pcrSelections[i].pcrSelect, b->pcrSelections[i].pcrSelect, 3) != 0)
            return 0;
    return 1;
}

/* ---- TPM session plumbing ---- */

static void tpm_close(struct tpm *t)
{
    if (t->conn.esys != NULL && t->primary != ESYS_TR_NONE)
        (void)Esys_FlushContext(t->conn.esys, t->primary);
    t->primary = ESYS_TR_NONE;
    kms_tpm_close(&t->conn);
}

/* Connects and recreates the storage primary key (TCG SRK template, ECC P-256). */
static int tpm_open(struct tpm *t, const char *tcti)
{
    TPM2B_PUBLIC tmpl;
    TPM2B_NAME *name = NULL;
    int rc = 0;

    memset(t, 0, sizeof(*t));
    t->tcti_name = tcti;
    t->primary = ESYS_TR_NONE;
    KMS_GUARD(kms_tpm_open(&t->conn, tcti, KMS_ERR_STORE_SEAL, tcti,
                           "check --tpm-tcti and that the TPM device (or simulator) is reachable"));
    kms_tpm_template_srk(&tmpl);
    KMS_TSS_GUARD(kms_tpm_create_primary(t->conn.esys, ESYS_TR_RH_OWNER, &tmpl, &t->primary, NULL),
                  KMS_ERR_STORE_SEAL, t->tcti_name,
                  "creating the storage primary key in the owner hierarchy (Esys_CreatePrimary)",
                  "kmsd needs an empty owner authorization value on this TPM");
    KMS_TSS_GUARD(Esys_TR_GetName(t->conn.esys, t->primary, &name), KMS_ERR_STORE_SEAL,
                  t->tcti_name, "Esys_TR_GetName", NULL);
    KMS_ENSURE(name->size <= sizeof(t->primary_name.name), KMS_ERR_STORE_SEAL,
               "TPM (%s): primary key name is too long", tcti);
    t->primary_name = *name;
out:
    Esys_Free(name);
    if (rc < 0)
        tpm_close(t);
    return rc;
}

/* Starts a session salted with the primary, AES-128-CFB parameter encryption, SHA-256. */
static int start_session(struct tpm *t, TPM2_SE type, TPMA_SESSION attrs, ESYS_TR *sess)
{
    TPMT_SYM_DEF sym;
    int rc = 0;

    memset(&sym, 0, sizeof(sym));
    sym.algorithm = TPM2_ALG_AES;
    sym.keyBits.aes = 128;
    sym.mode.aes = TPM2_ALG_CFB;
    KMS_TSS_GUARD(Esys_StartAuthSession(t->conn.esys, t->primary, ESYS_TR_NONE, ESYS_TR_NONE,
                                        ESYS_TR_NONE, ESYS_TR_NONE, NULL, type, &sym,
                                        TPM2_ALG_SHA256, sess),
                  KMS_ERR_STORE_SEAL, t->tcti_name,
                  "starting a salted session (Esys_StartAuthSession)", NULL);
    KMS_TSS_GUARD(
        Esys_TRSess_SetAttributes(t->conn.esys, *sess, attrs | TPMA_SESSION_CONTINUESESSION, 0xff),
        KMS_ERR_STORE_SEAL, t->tcti_name, "Esys_TRSess_SetAttributes", NULL);
out:
    return rc;
}

static void flush(struct tpm *t, ESYS_TR *h)
{
    if (*h != ESYS_TR_NONE)
        (void)Esys_FlushContext(t->conn.esys, *h);
    *h = ESYS_TR_NONE;
}

/* Reads the selected PCRs, one per command (a PCR_Read may return fewer than asked). */
static int pcr_read(struct tpm *t, const TPML_PCR_SELECTION *sel, TPM2B_DIGEST *vals, size_t *n)
{
    TPML_PCR_SELECTION one;
    TPML_PCR_SELECTION *sel_out = NULL;
    TPML_DIGEST *dig = NULL;
    UINT32 counter = 0;
    int rc = 0;

    *n = 0;
    for (uint32_t i = 0; i < sel->count; i++) {
        const TPMS_PCR_SELECTION *s = &sel->pcrSelections[i];
        int b = bank_find(s->hash);

        for (unsigned p = 0; p < NUM_PCRS; p++) {
            if (!pcr_is_set(s, p))
                continue;
            memset(&one, 0, sizeof(one));
            one.count = 1;
            one.pcrSelections[0].hash = s->hash;
            one.pcrSelections[0].sizeofSelect = 3;
            one.pcrSelections[0].pcrSelect[p / 8] = (uint8_t)(1u << (p % 8));
            KMS_TSS_GUARD(Esys_PCR_Read(t->conn.esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                        &one, &counter, &sel_out, &dig),
                          KMS_ERR_STORE_SEAL, t->tcti_name, "reading PCRs (Esys_PCR_Read)", NULL);
            KMS_ENSURE(dig->count == 1 && dig->digests[0].size == banks[b].len, KMS_ERR_STORE_SEAL,
                       "TPM (%s): PCR %s:%u is not available (is the %s bank allocated?)",
                       t->tcti_name, banks[b].name, p, banks[b].name);
            vals[(*n)++] = dig->digests[0];
            Esys_Free(sel_out);
            Esys_Free(dig);
            sel_out = NULL;
            dig = NULL;
        }
    }
out:
    Esys_Free(sel_out);
    Esys_Free(dig);
    return rc;
}

/* PolicyPCR digest for the given values, computed by the TPM in a trial session. */
static int policy_digest(struct tpm *t, const TPML_PCR_SELECTION *sel, const TPM2B_DIGEST *vals,
                         size_t n, TPM2B_DIGEST *out)
{
    TPMT_SYM_DEF sym;
    TPM2B_DIGEST pcr_digest;
    TPM2B_DIGEST *pd = NULL;
    ESYS_TR trial = ESYS_TR_NONE;
    EVP_MD_CTX *md = NULL;
    unsigned int len = 0;
    int rc = 0;

    /* pcrDigest = H(values in selection order), H = the policy session's hash (SHA-256) */
    md = EVP_MD_CTX_new();
    KMS_GUARD_PTR(md);
    KMS_GUARD_OSSL(EVP_DigestInit_ex(md, EVP_sha256(), NULL), "PCR digest");
    for (size_t i = 0; i < n; i++)
        KMS_GUARD_OSSL(EVP_DigestUpdate(md, vals[i].buffer, vals[i].size), "PCR digest");
    memset(&pcr_digest, 0, sizeof(pcr_digest));
    KMS_GUARD_OSSL(EVP_DigestFinal_ex(md, pcr_digest.buffer, &len), "PCR digest");
    pcr_digest.size = (UINT16)len;
    memset(&sym, 0, sizeof(sym));
    sym.algorithm = TPM2_ALG_NULL;
    KMS_TSS_GUARD(Esys_StartAuthSession(t->conn.esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                        ESYS_TR_NONE, ESYS_TR_NONE, NULL, TPM2_SE_TRIAL, &sym,
                                        TPM2_ALG_SHA256, &trial),
                  KMS_ERR_STORE_SEAL, t->tcti_name, "starting a trial policy session", NULL);
    KMS_TSS_GUARD(Esys_PolicyPCR(t->conn.esys, trial, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                 &pcr_digest, sel),
                  KMS_ERR_STORE_SEAL, t->tcti_name,
                  "computing the PCR policy (Esys_PolicyPCR, trial)", NULL);
    KMS_TSS_GUARD(
        Esys_PolicyGetDigest(t->conn.esys, trial, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pd),
        KMS_ERR_STORE_SEAL, t->tcti_name, "Esys_PolicyGetDigest", NULL);
    *out = *pd;
out:
    EVP_MD_CTX_free(md);
    Esys_Free(pd);
    flush(t, &trial);
    return rc;
}

/* Seals kek under the primary with PolicyPCR over sel at the current PCR values. */
static int tpm_seal(struct tpm *t, const TPML_PCR_SELECTION *sel, const uint8_t kek[KEK_LEN],
                    struct blob *b)
{
    TPM2B_SENSITIVE_CREATE sens;
    TPM2B_PUBLIC tmpl;
    TPM2B_DATA outside;
    TPML_PCR_SELECTION creation;
    TPM2B_PRIVATE *priv = NULL;
    TPM2B_PUBLIC *pub = NULL;
    TPM2B_CREATION_DATA *cdata = NULL;
    TPM2B_DIGEST *chash = NULL;
    TPMT_TK_CREATION *ticket = NULL;
    ESYS_TR sess = ESYS_TR_NONE;
    int rc = 0;

    memset(b, 0, sizeof(*b));
    memset(&sens, 0, sizeof(sens));
    memset(&outside, 0, sizeof(outside));
    memset(&creation, 0, sizeof(creation));
    b->primary_name = t->primary_name;
    b->sel = *sel;
    KMS_GUARD(pcr_read(t, sel, b->pcr, &b->npcr));
    /* only the PCR policy authorizes the sealed KEK */
    kms_tpm_template_sealed(&tmpl);
    KMS_GUARD(policy_digest(t, sel, b->pcr, b->npcr, &tmpl.publicArea.authPolicy));
    sens.sensitive.data.size = KEK_LEN;
    memcpy(sens.sensitive.data.buffer, kek, KEK_LEN);
    /* DECRYPT: the first command parameter (inSensitive, the KEK) travels encrypted */
    KMS_GUARD(start_session(t, TPM2_SE_HMAC, TPMA_SESSION_DECRYPT, &sess));
    KMS_TSS_GUARD(Esys_Create(t->conn.esys, t->primary, ESYS_TR_PASSWORD, sess, ESYS_TR_NONE, &sens,
                              &tmpl, &outside, &creation, &priv, &pub, &cdata, &chash, &ticket),
                  KMS_ERR_STORE_SEAL, t->tcti_name, "sealing the KEK (Esys_Create)", NULL);
    b->priv = *priv;
    b->pub = *pub;
out:
    OPENSSL_cleanse(&sens, sizeof(sens));
    flush(t, &sess);
    Esys_Free(priv);
    Esys_Free(pub);
    Esys_Free(cdata);
    Esys_Free(chash);
    Esys_Free(ticket);
    return rc;
}

/* After a refused unseal: names the PCRs whose values differ from those recorded at seal time. */
static void pcr_diff(struct tpm *t, const struct blob *b, char *out, size_t cap)
{
    TPM2B_DIGEST now[MAX_BANKS * NUM_PCRS];
    size_t n = 0;
    size_t k = 0;
    size_t len = 0;

    out[0] = '\0';
    if (pcr_read(t, &b->sel, now, &n) < 0 || n != b->npcr)
        return;
    for (uint32_t i = 0; i < b->sel.count; i++) {
        const TPMS_PCR_SELECTION *s = &b->sel.pcrSelections[i];

        for (unsigned p = 0; p < NUM_PCRS; p++) {
            if (!pcr_is_set(s, p))
                continue;
            if ((now[k].size != b->pcr[k].size ||
                 memcmp(now[k].buffer, b->pcr[k].buffer, now[k].size) != 0) &&
                len < cap)
                len += (size_t)snprintf(out + len, cap - len, "%s%s:%u", len > 0 ? ", " : "",
                                        banks[bank_find(s->hash)].name, p);
            k++;
        }
    }
}

static int tpm_unseal(struct tpm *t, const struct blob *b, const char *path, uint8_t kek[KEK_LEN])
{
    TPM2B_DIGEST empty;
    TPM2B_SENSITIVE_DATA *data = NULL;
    ESYS_TR obj = ESYS_TR_NONE;
    ESYS_TR sess = ESYS_TR_NONE;
    char sel_txt[128];
    char diff[256];
    TSS2_RC r;
    int rc = 0;

    KMS_ENSURE(b->primary_name.size == t->primary_name.size &&
                   memcmp(b->primary_name.name, t->primary_name.name, b->primary_name.size) == 0,
               KMS_ERR_STORE_SEAL,
               "TPM (%s): the KEK in %s was sealed by a different TPM (or this TPM's owner "
               "hierarchy was cleared since): its storage key differs. Start kmsd on the machine "
               "that sealed it, or re-provision this node (onboard from a peer)",
               t->tcti_name, path);
    r = Esys_Load(t->conn.esys, t->primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &b->priv,
                  &b->pub, &obj);
    if (r != TSS2_RC_SUCCESS) {
        rc = kms_tss_err(KMS_ERR_STORE_SEAL, t->tcti_name, r, "loading the sealed KEK (Esys_Load)",
                         "the blob file was modified or comes from another TPM; restore it from a "
                         "backup or re-provision this node");
        goto out;
    }
    /* ENCRYPT: the response parameter (the KEK) comes back encrypted */
    KMS_GUARD(start_session(t, TPM2_SE_POLICY, TPMA_SESSION_ENCRYPT, &sess));
    memset(&empty, 0, sizeof(empty)); /* empty digest: the TPM uses the current PCR values */
    KMS_TSS_GUARD(Esys_PolicyPCR(t->conn.esys, sess, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                 &empty, &b->sel),
                  KMS_ERR_STORE_SEAL, t->tcti_name, "Esys_PolicyPCR", NULL);
    r = Esys_Unseal(t->conn.esys, obj, sess, ESYS_TR_NONE, ESYS_TR_NONE, &data);
    if (r != TSS2_RC_SUCCESS) {
        sel_str(&b->sel, sel_txt, sizeof(sel_txt));
        if (is_policy_fail(r)) {
            pcr_diff(t, b, diff, sizeof(diff));
            rc =
                kms_err_set(KMS_ERR_STORE_SEAL,
                            "TPM (%s): the TPM refused to unseal the KEK in %s: the PCRs it is "
                            "sealed to (%s) no longer hold the values they had at seal time%s%s%s. "
                            "The node stays sealed: boot the measured configuration it was "
                            "sealed under, or re-provision this node (onboard from a peer)",
                            t->tcti_name, path, sel_txt, diff[0] != '\0' ? " (changed: " : "", diff,
                            diff[0] != '\0' ? ")" : "");
        } else {
            rc = kms_tss_err(KMS_ERR_STORE_SEAL, t->tcti_name, r, "unsealing the KEK (Esys_Unseal)",
                             NULL);
        }
        goto out;
    }
    KMS_ENSURE(data->size == KEK_LEN, KMS_ERR_STORE_SEAL,
               "TPM (%s): the sealed KEK in %s has %u bytes, want %d", t->tcti_name, path,
               (unsigned)data->size, KEK_LEN);
    memcpy(kek, data->buffer, KEK_LEN);
out:
    if (data != NULL) {
        OPENSSL_cleanse(data, sizeof(*data));
        Esys_Free(data);
    }
    flush(t, &sess);
    flush(t, &obj);
    return rc;
}

/* ---- blob file ---- */

static int put_section(struct kms_buf *out, const uint8_t *p, size_t n)
{
    int rc = 0;

    KMS_ENSURE(n <= SECTION_MAX, KMS_ERR_INTERNAL, "TPM blob section too large");
    KMS_GUARD(kms_buf_put_u16be(out, (uint16_t)n));
    KMS_GUARD(kms_buf_put(out, p, n));
out:
    return rc;
}

static int blob_encode(const struct blob *b, struct kms_buf *out)
{
    uint8_t tmp[SECTION_MAX];
    uint8_t sum[CHECKSUM_LEN];
    size_t off;
    int rc = 0;

    KMS_GUARD(kms_buf_put(out, BLOB_MAGIC, BLOB_MAGIC_LEN));
    KMS_GUARD(kms_buf_put_u16be(out, BLOB_VERSION));
    KMS_GUARD(put_section(out, b->primary_name.name, b->primary_name.size));
    off = 0;
    KMS_ENSURE(Tss2_MU_TPML_PCR_SELECTION_Marshal(&b->sel, tmp, sizeof(tmp), &off) ==
                   TSS2_RC_SUCCESS,
               KMS_ERR_INTERNAL, "cannot marshal the PCR selection");
    KMS_GUARD(put_section(out, tmp, off));
    KMS_GUARD(kms_buf_put_u16be(out, (uint16_t)b->npcr));
    for (size_t i = 0; i < b->npcr; i++)
        KMS_GUARD(put_section(out, b->pcr[i].buffer, b->pcr[i].size));
    off = 0;
    KMS_ENSURE(Tss2_MU_TPM2B_PUBLIC_Marshal(&b->pub, tmp, sizeof(tmp), &off) == TSS2_RC_SUCCESS,
               KMS_ERR_INTERNAL, "cannot marshal the sealed object's public area");
    KMS_GUARD(put_section(out, tmp, off));
    off = 0;
    KMS_ENSURE(Tss2_MU_TPM2B_PRIVATE_Marshal(&b->priv, tmp, sizeof(tmp), &off) == TSS2_RC_SUCCESS,
               KMS_ERR_INTERNAL, "cannot marshal the sealed object's private area");
    KMS_GUARD(put_section(out, tmp, off));
    KMS_GUARD_OSSL(EVP_Digest(out->data, out->len, sum, NULL, EVP_sha256(), NULL), "blob checksum");
    KMS_GUARD(kms_buf_put(out, sum, sizeof(sum)));
out:
    return rc;
}

static int get_section(struct kms_reader *r, size_t max, const uint8_t **p, size_t *n)
{
    uint16_t len = 0;
    int rc = 0;

    KMS_GUARD(kms_rd_u16be(r, &len));
    KMS_ENSURE(len <= max, KMS_ERR_PARSE, "section of %u bytes exceeds %zu", len, max);
    KMS_GUARD(kms_rd_ptr(r, len, p));
    *n = len;
out:
    return rc;
}

static int blob_decode_inner(const uint8_t *raw, size_t len, struct blob *b)
{
    struct kms_reader r;
    const uint8_t *p = NULL;
    const uint8_t *magic = NULL;
    uint8_t sum[CHECKSUM_LEN];
    uint16_t ver = 0;
    uint16_t npcr = 0;
    size_t want = 0;
    size_t n = 0;
    size_t off;
    int rc = 0;

    memset(b, 0, sizeof(*b));
    KMS_ENSURE(len >= BLOB_MAGIC_LEN + 2 + CHECKSUM_LEN, KMS_ERR_PARSE, "too short");
    kms_rd_init(&r, raw, len - CHECKSUM_LEN);
    KMS_GUARD(kms_rd_ptr(&r, BLOB_MAGIC_LEN, &magic));
    KMS_ENSURE(memcmp(magic, BLOB_MAGIC, BLOB_MAGIC_LEN) == 0, KMS_ERR_PARSE,
               "not a kmsd TPM-sealed KEK (bad magic)");
    KMS_GUARD(kms_rd_u16be(&r, &ver));
    KMS_ENSURE(ver == BLOB_VERSION, KMS_ERR_PARSE, "unknown blob version %u (this kmsd reads %d)",
               ver, BLOB_VERSION);
    KMS_GUARD_OSSL(EVP_Digest(raw, len - CHECKSUM_LEN, sum, NULL, EVP_sha256(), NULL),
                   "blob checksum");
    KMS_ENSURE(CRYPTO_memcmp(sum, raw + len - CHECKSUM_LEN, CHECKSUM_LEN) == 0, KMS_ERR_PARSE,
               "checksum mismatch (the file is corrupted or was modified)");
    KMS_GUARD(get_section(&r, sizeof(b->primary_name.name), &p, &n));
    memcpy(b->primary_name.name, p, n);
    b->primary_name.size = (UINT16)n;
    KMS_GUARD(get_section(&r, SECTION_MAX, &p, &n));
    off = 0;
    KMS_ENSURE(Tss2_MU_TPML_PCR_SELECTION_Unmarshal(p, n, &off, &b->sel) == TSS2_RC_SUCCESS &&
                   off == n,
               KMS_ERR_PARSE, "malformed PCR selection");
    KMS_GUARD(sel_check(&b->sel, "blob"));
    for (uint32_t i = 0; i < b->sel.count; i++)
        for (unsigned q = 0; q < NUM_PCRS; q++)
            want += (size_t)pcr_is_set(&b->sel.pcrSelections[i], q);
    KMS_GUARD(kms_rd_u16be(&r, &npcr));
    KMS_ENSURE(npcr == want, KMS_ERR_PARSE, "%u PCR values for %zu selected PCRs", npcr, want);
    b->npcr = npcr;
    for (size_t i = 0; i < b->npcr; i++) {
        KMS_GUARD(get_section(&r, sizeof(b->pcr[i].buffer), &p, &n));
        memcpy(b->pcr[i].buffer, p, n);
        b->pcr[i].size = (UINT16)n;
    }
    KMS_GUARD(get_section(&r, SECTION_MAX, &p, &n));
    off = 0;
    KMS_ENSURE(Tss2_MU_TPM2B_PUBLIC_Unmarshal(p, n, &off, &b->pub) == TSS2_RC_SUCCESS && off == n,
               KMS_ERR_PARSE, "malformed public area");
    KMS_GUARD(get_section(&r, SECTION_MAX, &p, &n));
    off = 0;
    KMS_ENSURE(Tss2_MU_TPM2B_PRIVATE_Unmarshal(p, n, &off, &b->priv) == TSS2_RC_SUCCESS && off == n,
               KMS_ERR_PARSE, "malformed private area");
    KMS_ENSURE(kms_rd_left(&r) == 0, KMS_ERR_PARSE, "%zu trailing bytes", kms_rd_left(&r));
out:
    return rc;
}

static int blob_decode(const uint8_t *raw, size_t len, const char *path, struct blob *b)
{
    int rc = blob_decode_inner(raw, len, b);

    if (rc < 0)
        rc = kms_err_wrap(KMS_ERR_STORE_SEAL,
                          "TPM-sealed KEK file %s is not usable (restore it from a backup or "
                          "re-provision this node)",
                          path);
    return rc;
}

/* Publishes data at path (0600) without ever replacing an existing file (common/file.h).
 * KMS_ERR_EXISTS if another process created path first. */
static int write_new(const char *path, const uint8_t *data, size_t n)
{
    int rc = 0;

    KMS_ENSURE(strlen(path) < PATH_MAX_LEN, KMS_ERR_INVAL, "TPM blob path is too long");
    rc = kms_file_write_atomic_ex(path, data, n, 0600, KMS_FILE_NOREPLACE);
    if (rc < 0 && rc != KMS_ERR_EXISTS)
        rc = kms_err_wrap(KMS_ERR_STORE_SEAL, "cannot create %s", path);
out:
    return rc;
}

/* New KEK = OpenSSL DRBG xor TPM RNG: either source alone being weak does not weaken it. */
static int kek_generate(struct tpm *t, uint8_t kek[KEK_LEN])
{
    TPM2B_DIGEST *rnd = NULL;
    int rc = 0;

    KMS_GUARD_OSSL(RAND_priv_bytes(kek, KEK_LEN), "generate KEK");
    KMS_TSS_GUARD(
        Esys_GetRandom(t->conn.esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, KEK_LEN, &rnd),
        KMS_ERR_STORE_SEAL, t->tcti_name, "Esys_GetRandom", NULL);
    KMS_ENSURE(rnd->size == KEK_LEN, KMS_ERR_STORE_SEAL, "TPM (%s): GetRandom returned %u bytes",
               t->tcti_name, (unsigned)rnd->size);
    for (size_t i = 0; i < KEK_LEN; i++)
        kek[i] ^= rnd->buffer[i];
out:
    if (rnd != NULL)
        OPENSSL_cleanse(rnd, sizeof(*rnd));
    Esys_Free(rnd);
    return rc;
}

/* Generates, seals and publishes a new KEK. KMS_ERR_EXISTS when another process won the race
 * (then its blob is used). */
static int kek_create(struct tpm *t, const TPML_PCR_SELECTION *sel, const char *path,
                      uint8_t kek[KEK_LEN])
{
    struct blob *b = NULL;
    struct kms_buf enc = {0};
    uint8_t check[KEK_LEN];
    char sel_txt[128];
    int rc = 0;

    b = calloc(2, sizeof(*b));
    KMS_GUARD_PTR(b);
    KMS_GUARD(kek_generate(t, kek));
    KMS_GUARD(tpm_seal(t, sel, kek, &b[0]));
    KMS_GUARD(blob_encode(&b[0], &enc));
    /* prove the round trip (encoding, policy, current PCRs) before the blob is published */
    KMS_GUARD(blob_decode(enc.data, enc.len, path, &b[1]));
    KMS_GUARD(tpm_unseal(t, &b[1], path, check));
    KMS_ENSURE(CRYPTO_memcmp(check, kek, KEK_LEN) == 0, KMS_ERR_STORE_SEAL,
               "TPM (%s): the KEK unsealed back does not match the one sealed", t->tcti_name);
    KMS_GUARD(write_new(path, enc.data, enc.len));
    sel_str(sel, sel_txt, sizeof(sel_txt));
    KMS_INFO("created a new KEK sealed by the TPM (%s) to PCRs %s in %s", t->tcti_name, sel_txt,
             path);
out:
    OPENSSL_cleanse(check, sizeof(check));
    free(b);
    kms_buf_free(&enc);
    return rc;
}

int kms_seal_tpm_kek(const struct kms_seal_cfg *cfg, int may_create, uint8_t kek[KEK_LEN],
                     int *created)
{
    const char *tcti =
        cfg->tcti != NULL && cfg->tcti[0] != '\0' ? cfg->tcti : KMS_SEAL_TPM_DEFAULT_TCTI;
    const char *pcrs =
        cfg->pcrs != NULL && cfg->pcrs[0] != '\0' ? cfg->pcrs : KMS_SEAL_TPM_DEFAULT_PCRS;
    const char *path = cfg->blob_path;
    TPML_PCR_SELECTION sel;
    struct tpm t = {.tcti_name = tcti, .primary = ESYS_TR_NONE};
    struct blob *b = NULL;
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    char want[128];
    char have[128];
    int rc = 0;

    if (created != NULL)
        *created = 0;
    KMS_ENSURE(path != NULL && path[0] != '\0', KMS_ERR_INVAL, "TPM blob path is not set");
    KMS_GUARD(parse_pcrs(pcrs, &sel));
    rc = kms_file_read(path, BLOB_MAX, &raw, &raw_len);
    if (rc == KMS_ERR_NOTFOUND) {
        KMS_ENSURE(may_create, KMS_ERR_NOTFOUND, "TPM-sealed KEK file %s does not exist", path);
        KMS_GUARD(tpm_open(&t, tcti));
        rc = kek_create(&t, &sel, path, kek);
        if (rc == 0) {
            if (created != NULL)
                *created = 1;
            goto out;
        }
        if (rc != KMS_ERR_EXISTS)
            goto out;
        rc = kms_file_read(path, BLOB_MAX, &raw, &raw_len); /* another process sealed first */
    }
    if (rc < 0) {
        rc = kms_err_wrap(KMS_ERR_STORE_SEAL, "cannot read the TPM-sealed KEK file %s", path);
        goto out;
    }
    b = calloc(1, sizeof(*b));
    KMS_GUARD_PTR(b);
    KMS_GUARD(blob_decode(raw, raw_len, path, b));
    if (!sel_equal(&sel, &b->sel)) {
        sel_str(&sel, want, sizeof(want));
        sel_str(&b->sel, have, sizeof(have));
        KMS_WARN("the KEK in %s is sealed to PCRs %s, but %s is configured; unsealing with %s "
                 "(the selection is fixed when the KEK is sealed)",
                 path, have, want, have);
    }
    if (t.conn.esys == NULL)
        KMS_GUARD(tpm_open(&t, tcti));
    KMS_GUARD(tpm_unseal(&t, b, path, kek));
out:
    if (rc < 0)
        OPENSSL_cleanse(kek, KEK_LEN);
    tpm_close(&t);
    free(b);
    free(raw);
    return rc;
}
