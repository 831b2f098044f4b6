/* Peer bookkeeping for /health and /metrics. The periodic peer check loop is not built yet
 * (issue 3): with no checks, the node reports its own state and an empty peer list. */
#include "replication/replication.h"

int kms_repl_start(struct kms_node *n)
{
    (void)n;
    return 0;
}

void kms_repl_stop(struct kms_node *n)
{
    (void)n;
}

enum kms_node_state kms_repl_effective_state(struct kms_node *n)
{
    enum kms_node_state s;

    pthread_mutex_lock(&n->lock);
    s = n->state;
    pthread_mutex_unlock(&n->lock);
    return s;
}

json_t *kms_repl_peers_json(struct kms_node *n)
{
    (void)n;
    return json_array();
}

int kms_repl_metrics(struct kms_node *n, struct kms_buf *b)
{
    (void)n;
    (void)b;
    return 0;
}
