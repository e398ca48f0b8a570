/*
 * qbclient: a libqb IPC client for the peer benchmarks.
 *
 *   qbclient rpc|events|connect|idle NAME SIZE DURATION_MS N WINDOW
 *
 * rpc: OP_ECHO round trips of SIZE bytes for DURATION_MS; events: asks
 * for windows of WINDOW events of SIZE bytes (two windows in flight) for
 * DURATION_MS and counts what arrives; connect: connects and disconnects
 * for DURATION_MS; idle: holds N connections, prints "ready", waits for
 * its standard input to close. Prints one JSON result line (the format of
 * cmd/benchpeer's result). Roles it does not have print {"err":"unsupported"}.
 * With BENCH_SYNC set, rpc says "ready" after its warm-up and waits for a
 * line on its standard input before it measures.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/uio.h>

#include <qb/qbipcc.h>

#include "common.h"
#include "proto.h"

static int64_t hist[HIST_BUCKETS];

static void fail(const char *what, int err)
{
	char msg[256];
	snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
	print_result(0, 0, 0, 0, NULL, msg, NULL);
	exit(1);
}

static qb_ipcc_connection_t *connect_or_fail(const char *name)
{
	qb_ipcc_connection_t *c = qb_ipcc_connect(name, MAX_MSG);
	if (!c)
		fail("qb_ipcc_connect", errno);
	return c;
}

static int run_rpc(const char *name, size_t size, int64_t dur_ns)
{
	qb_ipcc_connection_t *c = connect_or_fail(name);
	struct qb_ipc_request_header req = { .id = OP_ECHO };
	char *payload = calloc(1, size ? size : 1), *resp = malloc(MAX_MSG);
	struct iovec iov[2] = { { &req, sizeof req }, { payload, size } };
	int64_t ops = 0, start, end, t0, t1;
	ssize_t want = sizeof(struct qb_ipc_response_header) + size, rc;
	int i;

	req.size = sizeof req + size;
	for (i = 0; i < 10; i++) { /* warm-up */
		rc = qb_ipcc_sendv_recv(c, iov, 2, resp, MAX_MSG, -1);
		if (rc != want)
			fail("warm-up qb_ipcc_sendv_recv", rc < 0 ? (int)-rc : EPROTO);
	}
	if (getenv("BENCH_SYNC")) { /* concurrent clients start together */
		char b[64];
		printf("ready\n");
		fflush(stdout);
		if (read(0, b, sizeof b) <= 0)
			fail("waiting for go", EPIPE);
	}
	start = t0 = now_ns();
	end = start + dur_ns;
	for (;;) {
		rc = qb_ipcc_sendv_recv(c, iov, 2, resp, MAX_MSG, -1);
		if (rc != want)
			fail("qb_ipcc_sendv_recv", rc < 0 ? (int)-rc : EPROTO);
		t1 = now_ns();
		hist[bucket(t1 - t0)]++;
		ops++;
		t0 = t1;
		if (t1 > end)
			break;
	}
	print_result(ops, (t0 - start) / 1e9, 0, 0, hist, NULL, NULL);
	qb_ipcc_disconnect(c);
	return 0;
}

static void ask(qb_ipcc_connection_t *c, uint32_t window, uint32_t size)
{
	struct {
		struct qb_ipc_request_header h;
		struct emit e;
	} req = { .h = { .id = OP_EMIT, .size = sizeof req }, .e = { window, size } };
	ssize_t rc;
	while ((rc = qb_ipcc_send(c, &req, sizeof req)) == -EAGAIN)
		;
	if (rc < 0)
		fail("qb_ipcc_send", (int)-rc);
}

static int run_events(const char *name, size_t size, int64_t dur_ns, int64_t window)
{
	qb_ipcc_connection_t *c = connect_or_fail(name);
	char *buf = malloc(MAX_MSG);
	int64_t asked = 0, got = 0, bytes = 0, start = now_ns(), end = start + dur_ns, give_up = end + 5000000000LL;
	ssize_t rc;

	ask(c, window, size);
	ask(c, window, size);
	asked = 2 * window;
	while (got < asked) {
		rc = qb_ipcc_event_recv(c, buf, MAX_MSG, 100);
		if (rc == -ETIMEDOUT || rc == -EAGAIN) {
			if (now_ns() > give_up)
				break;
			continue;
		}
		if (rc < 0)
			fail("qb_ipcc_event_recv", (int)-rc);
		got++;
		bytes += rc - (ssize_t)sizeof(struct qb_ipc_response_header);
		if (got % window == 0) {
			/* the window's reply follows its events */
			rc = qb_ipcc_recv(c, buf, MAX_MSG, 5000);
			if (rc < 0)
				fail("qb_ipcc_recv", (int)-rc);
			if (now_ns() < end) {
				ask(c, window, size);
				asked += window;
			}
		}
	}
	print_result(got, (now_ns() - start) / 1e9, bytes, asked - got, NULL, NULL, NULL);
	qb_ipcc_disconnect(c);
	return 0;
}

static int run_connect(const char *name, int64_t dur_ns)
{
	int64_t ops = 0, start = now_ns(), end = start + dur_ns;
	while (now_ns() < end) {
		qb_ipcc_connection_t *c = connect_or_fail(name);
		qb_ipcc_disconnect(c);
		ops++;
	}
	print_result(ops, (now_ns() - start) / 1e9, 0, 0, NULL, NULL, NULL);
	return 0;
}

static int run_idle(const char *name, int n)
{
	qb_ipcc_connection_t **cs = calloc(n, sizeof *cs);
	char b[64];
	int i;
	for (i = 0; i < n; i++)
		cs[i] = connect_or_fail(name);
	printf("ready\n");
	fflush(stdout);
	while (read(0, b, sizeof b) > 0)
		;
	for (i = 0; i < n; i++)
		qb_ipcc_disconnect(cs[i]);
	print_result(n, 0, 0, 0, NULL, NULL, NULL);
	return 0;
}

int main(int argc, char **argv)
{
	const char *role, *name;
	size_t size;
	int64_t dur_ns;
	int n, window;

	if (argc != 7) {
		fprintf(stderr, "usage: qbclient rpc|events|connect|idle NAME SIZE DURATION_MS N WINDOW\n");
		return 2;
	}
	role = argv[1];
	name = argv[2];
	size = strtoul(argv[3], NULL, 10);
	dur_ns = strtoll(argv[4], NULL, 10) * 1000000LL;
	n = atoi(argv[5]);
	window = atoi(argv[6]);
	if (size > MAX_MSG / 2 || window <= 0 || n <= 0) {
		fprintf(stderr, "qbclient: bad arguments\n");
		return 2;
	}
	raise_nofile();
	if (strcmp(role, "rpc") == 0)
		return run_rpc(name, size, dur_ns);
	if (strcmp(role, "events") == 0)
		return run_events(name, size, dur_ns, window);
	if (strcmp(role, "connect") == 0)
		return run_connect(name, dur_ns);
	if (strcmp(role, "idle") == 0)
		return run_idle(name, n);
	print_result(0, 0, 0, 0, NULL, "unsupported", NULL);
	return 0;
}
