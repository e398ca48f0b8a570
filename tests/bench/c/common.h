/*
 * Shared by the libqb benchmark programs: the clock, the latency histogram
 * (the same buckets as cmd/benchpeer's bucket: 50 per factor e) and the
 * JSON result line benchrun reads.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define HIST_BUCKETS 1600 /* e^(1600/50) ns: far beyond any latency here */

static inline int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int bucket(int64_t ns)
{
	int b;
	if (ns < 1)
		ns = 1;
	b = (int)(log((double)ns) * 50);
	return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

/* raise_nofile lets a process hold a thousand connections. */
static inline void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static inline void json_escape(const char *s, char *out, size_t n)
{
	size_t j = 0;
	for (; *s && j + 2 < n; s++) {
		if (*s == '"' || *s == '\\')
			out[j++] = '\\';
		out[j++] = (*s >= ' ') ? *s : ' ';
	}
	out[j] = 0;
}

/* print_result prints one result line; hist may be NULL, err and note
 * may be NULL. */
static inline void print_result(int64_t ops, double secs, int64_t bytes, int64_t lost,
			 const int64_t *hist, const char *err, const char *note)
{
	char buf[512];
	int first = 1, i;
	printf("{\"ops\":%lld,\"secs\":%.9f", (long long)ops, secs);
	if (bytes)
		printf(",\"bytes\":%lld", (long long)bytes);
	if (lost)
		printf(",\"lost\":%lld", (long long)lost);
	if (hist) {
		printf(",\"hist\":{");
		for (i = 0; i < HIST_BUCKETS; i++) {
			if (hist[i]) {
				printf("%s\"%d\":%lld", first ? "" : ",", i, (long long)hist[i]);
				first = 0;
			}
		}
		printf("}");
	}
	if (err) {
		json_escape(err, buf, sizeof buf);
		printf(",\"err\":\"%s\"", buf);
	}
	if (note) {
		json_escape(note, buf, sizeof buf);
		printf(",\"note\":\"%s\"", buf);
	}
	printf("}\n");
	fflush(stdout);
}

#endif
