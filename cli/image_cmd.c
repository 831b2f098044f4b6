/*
 * kmsctl image manifest: writes an OS image's measurement manifest (attest/image.h,
 * docs/os-image-manifest.md), the file kmsd's --image-manifest-dir / --image-manifest-url
 * serve, from known measurements or from a TDX quote of a guest that booted the image.
 */
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest/image.h"
#include "attest/tdx.h"
#include "cli/cli.h"
#include "common/file.h"
#include "common/hex.h"

#define QUOTE_FILE_MAX (64u * 1024u)

static const char image_usage[] =
    "Usage: kmsctl image SUBCOMMAND   (kmsctl image SUBCOMMAND --help)\n"
    "\n"
    "Subcommands:\n"
    "  manifest   write an OS image's measurement manifest (MRTD, RTMR0-2 per VM shape)\n";

static const char manifest_usage[] =
    "Usage: kmsctl image manifest --os-image-hash HEX [--image NAME] [--vm-shape JSON]\n"
    "                             (--from-quote FILE | --mrtd HEX --rtmr0 HEX --rtmr1 HEX\n"
    "                              --rtmr2 HEX) [--add-to FILE] [--out FILE]\n"
    "\n"
    "Prints (or writes to --out, atomically) the measurement manifest kmsd checks plain-TDX\n"
    "clients against (--image-manifest-dir DIR/<os_image_hash>.json, --image-manifest-url;\n"
    "docs/os-image-manifest.md): the MRTD and RTMR0-2 a guest of the image measures in VMs of\n"
    "one shape. --vm-shape is a JSON object of the vm_config fields the measurements depend on\n"
    "(cpu_count, memory_size, hugepages, num_gpus, ...; omitted fields match any value; default\n"
    "{}: every shape). The measurements come from --mrtd/--rtmr0/--rtmr1/--rtmr2 (96 hex digits\n"
    "each, e.g. dstack-mr's output) or from --from-quote FILE, a TDX quote (binary or hex) of a\n"
    "guest that booted the image in that shape; the quote is parsed, not verified, so take it\n"
    "from a machine you trust. --add-to FILE adds the entry to that manifest (same image).\n";

/* The measurements of a quote file (raw bytes, or hex text). */
static int mrs_from_quote(const char *path, struct kms_image_mrs *mrs)
{
    struct kms_tdx_quote q;
    uint8_t *buf = NULL, *raw = NULL;
    size_t len = 0, rlen = 0, n;
    int rc = 0;

    KMS_GUARD(kms_file_read(path, QUOTE_FILE_MAX, &buf, &len));
    n = len;
    while (n > 0 && isspace(buf[n - 1]))
        n--;
    buf[n] = '\0';
    if (n > 0 && strspn((const char *)buf, "0123456789abcdefABCDEFx") == n) {
        KMS_GUARD(kms_hex_decode((const char *)buf, &raw, &rlen));
        KMS_GUARD(kms_tdx_quote_parse(raw, rlen, &q));
    } else {
        KMS_GUARD(kms_tdx_quote_parse(buf, len, &q));
    }
    memcpy(mrs->mrtd, q.report.mr_td, 48);
    for (int i = 0; i < 3; i++)
        memcpy(mrs->rtmr[i], q.report.rtmr[i], 48);
out:
    free(raw);
    free(buf);
    return rc;
}

static int manifest_cmd(int argc, char **argv)
{
    static const struct option opts[] = {{"os-image-hash", required_argument, NULL, 'H'},
                                         {"image", required_argument, NULL, 'n'},
                                         {"vm-shape", required_argument, NULL, 's'},
                                         {"from-quote", required_argument, NULL, 'q'},
                                         {"mrtd", required_argument, NULL, 'm'},
                                         {"rtmr0", required_argument, NULL, '0'},
                                         {"rtmr1", required_argument, NULL, '1'},
                                         {"rtmr2", required_argument, NULL, '2'},
                                         {"add-to", required_argument, NULL, 'a'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *hash_hex = NULL, *image = NULL, *shape = NULL, *quote = NULL, *add_to = NULL;
    const char *out = NULL, *reg[4] = {NULL, NULL, NULL, NULL};
    struct kms_image_mrs mrs;
    uint8_t hash[32], *existing = NULL;
    size_t elen = 0;
    char *text = NULL;
    int c, nreg, rc = 1;

    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "h", opts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'H':
            hash_hex = optarg;
            break;
        case 'n':
            image = optarg;
            break;
        case 's':
            shape = optarg;
            break;
        case 'q':
            quote = optarg;
            break;
        case 'm':
            reg[0] = optarg;
            break;
        case '0':
        case '1':
        case '2':
            reg[c - '0' + 1] = optarg;
            break;
        case 'a':
            add_to = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'h':
            fputs(manifest_usage, stdout);
            return 0;
        default:
            fputs(manifest_usage, stderr);
            return 2;
        }
    }
    nreg = (reg[0] != NULL) + (reg[1] != NULL) + (reg[2] != NULL) + (reg[3] != NULL);
    if (hash_hex == NULL || optind != argc || (quote != NULL) == (nreg != 0) ||
        (nreg != 0 && nreg != 4)) {
        fputs(manifest_usage, stderr);
        return 2;
    }
    if (kms_hex_decode_exact(hash_hex, hash, 32) < 0) {
        fputs("kmsctl: --os-image-hash must be 32 bytes of hex\n", stderr);
        return 2;
    }
    if (quote != NULL) {
        if (mrs_from_quote(quote, &mrs) < 0) {
            fprintf(stderr, "kmsctl: image manifest: --from-quote %s: %s\n", quote,
                    kms_err_detail());
            return 1;
        }
    } else {
        uint8_t *dst[4] = {mrs.mrtd, mrs.rtmr[0], mrs.rtmr[1], mrs.rtmr[2]};

        for (int i = 0; i < 4; i++) {
            if (kms_hex_decode_exact(reg[i], dst[i], 48) < 0) {
                fputs("kmsctl: --mrtd and --rtmr0..2 must be 48 bytes of hex each\n", stderr);
                return 2;
            }
        }
    }
    if (add_to != NULL && kms_file_read(add_to, KMS_IMAGE_MANIFEST_MAX, &existing, &elen) < 0) {
        fprintf(stderr, "kmsctl: image manifest: --add-to %s: %s\n", add_to, kms_err_detail());
        goto out;
    }
    if (kms_image_manifest_build((const char *)existing, hash, image, shape, &mrs, &text) < 0) {
        fprintf(stderr, "kmsctl: image manifest: %s\n", kms_err_detail());
        goto out;
    }
    if (out == NULL) {
        puts(text);
    } else if (kms_file_write_atomic(out, text, strlen(text), 0644) < 0) {
        fprintf(stderr, "kmsctl: image manifest: --out %s: %s\n", out, kms_err_detail());
        goto out;
    }
    rc = 0;
out:
    free(existing);
    free(text);
    return rc;
}

int kms_cli_image(int argc, char **argv)
{
    static const struct kms_cli_sub subs[] = {{"manifest", manifest_cmd}};

    return kms_cli_subcommands("image", image_usage, subs, 1, argc, argv);
}
