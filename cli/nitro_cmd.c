/*
 * kmsctl nitro measure: PCR0/1/2 (and PCR8 of a signed image) and OS_IMAGE_HASH of an AWS Nitro
 * Enclave image file, as `nitro-cli describe-eif` and the seed guide's `get_keys.sh --show-mrs`
 * print them, so an operator can register an image without Rust or nitro-cli.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest/eif.h"
#include "cli/cli.h"
#include "common/hex.h"

static const char nitro_usage[] =
    "Usage: kmsctl nitro SUBCOMMAND   (kmsctl nitro SUBCOMMAND --help)\n"
    "\n"
    "Subcommands:\n"
    "  measure --eif FILE [--json]   PCR0, PCR1, PCR2 and OS_IMAGE_HASH of an enclave image\n";

static const char measure_usage[] =
    "Usage: kmsctl nitro measure --eif FILE [--json]\n"
    "\n"
    "Measures an enclave image file (EIF) the way the Nitro hypervisor does: PCR0 (kernel,\n"
    "cmdline, every ramdisk), PCR1 (kernel, cmdline, first ramdisk), PCR2 (the later ramdisks,\n"
    "i.e. the application), PCR8 (signing certificate, signed images only), and\n"
    "OS_IMAGE_HASH = sha256(PCR0 || PCR1 || PCR2), the value to register with\n"
    "`kmsctl chain add-image` and `kmsctl chain app add-hash` (dstack's os_image_hash and\n"
    "compose_hash of a Nitro app). The section table and the CRC-32 of the file are checked.\n"
    "--json prints {\"PCR0\", \"PCR1\", \"PCR2\", [\"PCR8\",] \"OS_IMAGE_HASH\"} as hex.\n";

static int measure_cmd(int argc, char **argv)
{
    static const struct option opts[] = {{"eif", required_argument, NULL, 'e'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    struct kms_eif_measurements m;
    const char *eif = NULL;
    int json = 0, c;
    char pcr[4][97], img[65];

    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "h", opts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'e':
            eif = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            fputs(measure_usage, stdout);
            return 0;
        default:
            fputs(measure_usage, stderr);
            return 2;
        }
    }
    if (eif == NULL || optind != argc) {
        fputs(measure_usage, stderr);
        return 2;
    }
    if (kms_eif_measure_file(eif, &m) < 0) {
        fprintf(stderr, "kmsctl: nitro measure: %s\n", kms_err_detail());
        return 1;
    }
    kms_hex_encode(m.pcr0, 48, pcr[0]);
    kms_hex_encode(m.pcr1, 48, pcr[1]);
    kms_hex_encode(m.pcr2, 48, pcr[2]);
    kms_hex_encode(m.pcr8, 48, pcr[3]);
    kms_hex_encode(m.os_image_hash, 32, img);
    if (json) {
        json_t *o = json_pack("{s:s,s:s,s:s}", "PCR0", pcr[0], "PCR1", pcr[1], "PCR2", pcr[2]);
        char *s;

        if (o != NULL && m.is_signed)
            json_object_set_new(o, "PCR8", json_string(pcr[3]));
        if (o != NULL)
            json_object_set_new(o, "OS_IMAGE_HASH", json_string(img));
        s = o != NULL ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        json_decref(o);
        if (s == NULL) {
            fputs("kmsctl: nitro measure: out of memory\n", stderr);
            return 1;
        }
        puts(s);
        free(s);
        return 0;
    }
    printf("PCR0=%s\nPCR1=%s\nPCR2=%s\n", pcr[0], pcr[1], pcr[2]);
    if (m.is_signed)
        printf("PCR8=%s\n", pcr[3]);
    printf("OS_IMAGE_HASH=%s\n", img);
    return 0;
}

int kms_cli_nitro(int argc, char **argv)
{
    static const struct kms_cli_sub subs[] = {{"measure", measure_cmd}};

    return kms_cli_subcommands("nitro", nitro_usage, subs, 1, argc, argv);
}
