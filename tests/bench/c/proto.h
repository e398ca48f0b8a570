/* The libqb benchmark protocol: request and event ids, the emit body. */
#ifndef BENCH_PROTO_H
#define BENCH_PROTO_H

#include <stdint.h>
#include <qb/qbipc_common.h>

enum {
	OP_ECHO = 1,  /* the reply carries the request's payload */
	OP_EMIT = 2,  /* body: struct emit; count events, then the reply */
	OP_EVENT = 3, /* an event: size payload bytes */
};

struct emit {
	uint32_t count;
	uint32_t size;
};

/* MAX_MSG is the max_msg_size clients ask for (libqb has no default:
 * each application picks one); 1 MiB, like Switchboard's rings. */
#define MAX_MSG (1 << 20)

#endif
