/*
 * qbserver: a libqb IPC server on qb_loop, for the peer benchmarks.
 *
 *   qbserver shm|socket NAME
 *
 * Serves OP_ECHO (the reply carries the request's payload) and OP_EMIT
 * (count events of size bytes, then an empty reply). Prints "ready NAME"
 * once it accepts clients; exits when its standard input closes.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/uio.h>

#include <qb/qbipcs.h>
#include <qb/qbloop.h>

#include "common.h"
#include "proto.h"

static qb_loop_t *loop;
static char *event_buf;

static int32_t job_add(enum qb_loop_priority p, void *data, qb_loop_job_dispatch_fn fn)
{
	return qb_loop_job_add(loop, p, data, fn);
}

static int32_t dispatch_add(enum qb_loop_priority p, int32_t fd, int32_t events, void *data,
			    qb_ipcs_dispatch_fn_t fn)
{
	return qb_loop_poll_add(loop, p, fd, events, data, fn);
}

static int32_t dispatch_mod(enum qb_loop_priority p, int32_t fd, int32_t events, void *data,
			    qb_ipcs_dispatch_fn_t fn)
{
	return qb_loop_poll_mod(loop, p, fd, events, data, fn);
}

static int32_t dispatch_del(int32_t fd)
{
	return qb_loop_poll_del(loop, fd);
}

static int32_t accept_any(qb_ipcs_connection_t *c, uid_t uid, gid_t gid)
{
	return 0;
}

static int32_t msg_process(qb_ipcs_connection_t *c, void *data, size_t size)
{
	struct qb_ipc_request_header *req = data;
	struct qb_ipc_response_header res = { .id = req->id, .error = 0 };
	struct iovec iov[2];
	const struct emit *e;
	uint32_t i;
	ssize_t rc;

	if (size < sizeof(*req))
		return 0;
	switch (req->id) {
	case OP_ECHO:
		iov[0].iov_base = &res;
		iov[0].iov_len = sizeof(res);
		iov[1].iov_base = (char *)data + sizeof(*req);
		iov[1].iov_len = size - sizeof(*req);
		res.size = sizeof(res) + iov[1].iov_len;
		qb_ipcs_response_sendv(c, iov, 2);
		break;
	case OP_EMIT:
		if (size < sizeof(*req) + sizeof(*e))
			return 0;
		e = (const struct emit *)((char *)data + sizeof(*req));
		if (e->size > MAX_MSG - sizeof(res))
			return 0;
		for (i = 0; i < e->count; i++) {
			struct qb_ipc_response_header ev = { .id = OP_EVENT, .error = 0 };
			ev.size = sizeof(ev) + e->size;
			iov[0].iov_base = &ev;
			iov[0].iov_len = sizeof(ev);
			iov[1].iov_base = event_buf;
			iov[1].iov_len = e->size;
			/* A full event ring is -EAGAIN: wait for the client to read. */
			while ((rc = qb_ipcs_event_sendv(c, iov, 2)) == -EAGAIN)
				sched_yield();
			if (rc < 0)
				return 0;
		}
		res.size = sizeof(res);
		qb_ipcs_response_send(c, &res, sizeof(res));
		break;
	}
	return 0;
}

static int32_t stdin_ready(int32_t fd, int32_t revents, void *data)
{
	char b[64];
	if (read(fd, b, sizeof b) <= 0) {
		qb_loop_stop(loop);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct qb_ipcs_service_handlers sh = {
		.connection_accept = accept_any,
		.msg_process = msg_process,
	};
	struct qb_ipcs_poll_handlers ph = {
		.job_add = job_add,
		.dispatch_add = dispatch_add,
		.dispatch_mod = dispatch_mod,
		.dispatch_del = dispatch_del,
	};
	enum qb_ipc_type type;
	qb_ipcs_service_t *s;
	int32_t rc;

	if (argc != 3 || (strcmp(argv[1], "shm") != 0 && strcmp(argv[1], "socket") != 0)) {
		fprintf(stderr, "usage: qbserver shm|socket NAME\n");
		return 2;
	}
	type = strcmp(argv[1], "shm") == 0 ? QB_IPC_SHM : QB_IPC_SOCKET;
	raise_nofile();
	event_buf = calloc(1, MAX_MSG);
	loop = qb_loop_create();
	if (!loop || !event_buf) {
		fprintf(stderr, "qbserver: out of memory\n");
		return 1;
	}
	s = qb_ipcs_create(argv[2], 0, type, &sh);
	if (!s) {
		fprintf(stderr, "qbserver: qb_ipcs_create: %s\n", strerror(errno));
		return 1;
	}
	qb_ipcs_poll_handlers_set(s, &ph);
	rc = qb_ipcs_run(s);
	if (rc != 0) {
		fprintf(stderr, "qbserver: qb_ipcs_run: %s\n", strerror(-rc));
		return 1;
	}
	qb_loop_poll_add(loop, QB_LOOP_HIGH, 0, POLLIN, NULL, stdin_ready);
	printf("ready %s\n", argv[2]);
	fflush(stdout);
	qb_loop_run(loop);
	qb_ipcs_destroy(s);
	qb_loop_destroy(loop);
	return 0;
}
