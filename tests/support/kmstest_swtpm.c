/* Test support: swtpm processes (kmstest_swtpm.h). */
#include "kmstest_swtpm.h"

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int port_free(int port)
{
    struct sockaddr_in a;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int ok;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    ok = s >= 0 && bind(s, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (s >= 0)
        close(s);
    return ok;
}

int kmstest_port_pair(void)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);

    for (int tries = 0; tries < 50; tries++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        int port;

        memset(&a, 0, sizeof(a));
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 ||
            getsockname(s, (struct sockaddr *)&a, &al) != 0) {
            if (s >= 0)
                close(s);
            continue;
        }
        port = ntohs(a.sin_port);
        close(s);
        if (port < 65535 && port_free(port + 1))
            return port;
    }
    return -1;
}

int kmstest_swtpm_start(struct kmstest_swtpm *t, int (*ready)(const char *tcti, void *arg),
                        void *arg)
{
    char server[64], ctrl[64], state[128];
    int port;

    memset(t, 0, sizeof(*t));
    t->pid = -1;
    if (system("command -v swtpm >/dev/null 2>&1") != 0)
        return 77;
    port = kmstest_port_pair();
    snprintf(t->dir, sizeof(t->dir), "/tmp/kms-swtpm-XXXXXX");
    if (port < 0 || mkdtemp(t->dir) == NULL) {
        t->dir[0] = '\0';
        return -1;
    }
    snprintf(server, sizeof(server), "type=tcp,port=%d,bindaddr=127.0.0.1", port);
    snprintf(ctrl, sizeof(ctrl), "type=tcp,port=%d,bindaddr=127.0.0.1", port + 1);
    snprintf(state, sizeof(state), "dir=%s", t->dir);
    snprintf(t->tcti, sizeof(t->tcti), "swtpm:host=127.0.0.1,port=%d", port);
    t->pid = fork();
    if (t->pid < 0)
        return -1;
    if (t->pid == 0) {
        execlp("swtpm", "swtpm", "socket", "--tpm2", "--server", server, "--ctrl", ctrl, "--flags",
               "not-need-init,startup-clear", "--tpmstate", state, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        struct timespec ts = {0, 50 * 1000 * 1000};

        if (ready(t->tcti, arg))
            return 0;
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "  swtpm did not come up on %s\n", t->tcti);
    return -1;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

void kmstest_swtpm_stop(struct kmstest_swtpm *t)
{
    if (t->pid > 0) {
        kill(t->pid, SIGTERM);
        waitpid(t->pid, NULL, 0);
        t->pid = -1;
    }
    if (t->dir[0] != '\0') {
        if (nftw(t->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS) != 0)
            fprintf(stderr, "  could not remove %s\n", t->dir);
        t->dir[0] = '\0';
    }
}
