// SPDX-License-Identifier: Apache-2.0
/*
 * The benchmark's traffic: a server (echo + bulk) and three clients (ping-pong latency, bulk
 * throughput, connect-request-response rate). Every byte carried is checked against a known pattern,
 * so a path that drops, duplicates or reorders data fails the run instead of looking fast.
 *
 * Written in C rather than with the Python test peers: a round trip through a proxy is a few tens of
 * microseconds, and an interpreter's per-call overhead would be a large, noisy part of what is measured.
 *
 *   loadgen server   --echo PORT --bulk PORT
 *   loadgen pingpong HOST:PORT --size N --count N [--warmup N]
 *   loadgen bulk     HOST:PORT --bytes N --dir up|down
 *   loadgen crr      HOST:PORT --size N --seconds S --max N
 *   loadgen hold     HOST:PORT --count N
 *
 * Clients print one JSON line with "ok" and their measurements.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The pattern repeats with a prime period, so a chunk delivered at the wrong offset never matches. */
#define PERIOD 65521
#define CHUNK (256 * 1024)
#define BULK_MAGIC 0x4b424d42u /* "MBBK" */

static uint8_t pattern[PERIOD + CHUNK];

static void init_pattern(void)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < sizeof(pattern); i++) {
		if (i < PERIOD) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			pattern[i] = (uint8_t)(x >> 32);
		} else {
			pattern[i] = pattern[i - PERIOD];
		}
	}
}

static const uint8_t *pattern_at(uint64_t offset)
{
	return pattern + offset % PERIOD;
}

/* Compares n bytes received at stream offset `offset` with the pattern. */
static bool pattern_ok(const uint8_t *buf, size_t n, uint64_t offset)
{
	while (n > 0) {
		size_t k = n < CHUNK ? n : CHUNK;
		if (memcmp(buf, pattern_at(offset), k) != 0)
			return false;
		buf += k, n -= k, offset += k;
	}
	return true;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void fail(const char *what)
{
	printf("{\"ok\":false,\"error\":\"%s: %s\"}\n", what, strerror(errno));
	fflush(stdout);
	exit(1);
}

static int write_all(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	while (n > 0) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += k, n -= (size_t)k;
	}
	return 0;
}

/* 0 on success, -1 on error, 1 on EOF before n bytes. */
static int read_exact(int fd, void *buf, size_t n)
{
	uint8_t *p = buf;
	while (n > 0) {
		ssize_t k = read(fd, p, n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (k == 0)
			return 1;
		p += k, n -= (size_t)k;
	}
	return 0;
}

/* A destination of either family: "a.b.c.d:port" or "[v6]:port". */
struct target {
	union {
		struct sockaddr sa;
		struct sockaddr_in v4;
		struct sockaddr_in6 v6;
	};
	socklen_t len;
};

static struct target parse_target(const char *s)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	const char *h = s[0] == '[' ? s + 1 : s;
	const char *e = s[0] == '[' && colon && colon > s && colon[-1] == ']' ? colon - 1 : colon;
	if (!colon || e < h || (size_t)(e - h) >= sizeof(host)) {
		fprintf(stderr, "bad target %s\n", s);
		exit(2);
	}
	memcpy(host, h, (size_t)(e - h));
	host[e - h] = 0;
	uint16_t port = htons((uint16_t)atoi(colon + 1));
	struct target t = {0};
	if (inet_pton(AF_INET, host, &t.v4.sin_addr) == 1) {
		t.v4.sin_family = AF_INET;
		t.v4.sin_port = port;
		t.len = sizeof(t.v4);
	} else if (inet_pton(AF_INET6, host, &t.v6.sin6_addr) == 1) {
		t.v6.sin6_family = AF_INET6;
		t.v6.sin6_port = port;
		t.len = sizeof(t.v6);
	} else {
		fprintf(stderr, "bad address %s\n", host);
		exit(2);
	}
	return t;
}

static void nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int dial(const struct target *a)
{
	int fd = socket(a->sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	nodelay(fd);
	if (connect(fd, &a->sa, a->len) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted nanoseconds, in microseconds. */
static double pct_us(const uint64_t *sorted, size_t n, double p)
{
	size_t i = (size_t)(p / 100.0 * (double)n);
	if (i >= n)
		i = n - 1;
	return (double)sorted[i] / 1000.0;
}

static void print_latencies(uint64_t *lat, size_t n)
{
	qsort(lat, n, sizeof(*lat), cmp_u64);
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += (double)lat[i];
	printf("\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,\"min_us\":%.2f,\"max_us\":%.2f,"
	       "\"mean_us\":%.2f",
	       pct_us(lat, n, 50), pct_us(lat, n, 90), pct_us(lat, n, 99), pct_us(lat, n, 99.9),
	       (double)lat[0] / 1000.0, (double)lat[n - 1] / 1000.0, sum / (double)n / 1000.0);
}

/* ------------------------------------------------------------------------------------------------ */
/* Server: echo connections in one epoll loop; bulk connections each on a thread with blocking I/O. */

struct echo_conn {
	int fd;
	size_t off, len;
	uint8_t buf[64 * 1024];
};

struct bulk_hdr {
	uint32_t magic;
	uint32_t dir; /* 0: client sends, 1: server sends */
	uint64_t bytes;
};

struct bulk_reply {
	uint64_t received;
	uint64_t ok;
};

static void *bulk_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	uint8_t *buf = malloc(CHUNK);
	struct bulk_hdr h;
	if (!buf || read_exact(fd, &h, sizeof(h)) != 0 || h.magic != BULK_MAGIC)
		goto out;
	if (h.dir == 0) {
		struct bulk_reply r = {0, 1};
		while (r.received < h.bytes) {
			uint64_t want = h.bytes - r.received;
			ssize_t k = read(fd, buf, want < CHUNK ? want : CHUNK);
			if (k <= 0)
				break;
			if (!pattern_ok(buf, (size_t)k, r.received))
				r.ok = 0;
			r.received += (uint64_t)k;
		}
		write_all(fd, &r, sizeof(r));
	} else {
		uint64_t sent = 0;
		while (sent < h.bytes) {
			uint64_t k = h.bytes - sent < CHUNK ? h.bytes - sent : CHUNK;
			if (write_all(fd, pattern_at(sent), k) < 0)
				break;
			sent += k;
		}
		/* Wait for the client's close, so every byte is read before ours is. */
		while (read(fd, buf, CHUNK) > 0) {
		}
	}
out:
	free(buf);
	close(fd);
	return NULL;
}

/* With `dual`, [::] with IPV6_V6ONLY off (both families, as a dual-stack pod's app); else 0.0.0.0. */
static bool dual;

static int listen_on(int port)
{
	int fd = socket(dual ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		fail("socket");
	int one = 1, zero = 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = 0};
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
	if (dual && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0)
		fail("IPV6_V6ONLY");
	if (dual ? bind(fd, (struct sockaddr *)&a6, sizeof(a6)) : bind(fd, (struct sockaddr *)&a, sizeof(a)))
		fail("bind");
	if (listen(fd, 4096) < 0)
		fail("listen");
	return fd;
}

static void echo_close(int ep, struct echo_conn *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c);
}

static int server(int echo_port, int bulk_port)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int le = listen_on(echo_port), lb = listen_on(bulk_port);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &le};
	epoll_ctl(ep, EPOLL_CTL_ADD, le, &ev);
	ev.data.ptr = &lb;
	epoll_ctl(ep, EPOLL_CTL_ADD, lb, &ev);
	printf("{\"event\":\"listening\",\"echo\":%d,\"bulk\":%d}\n", echo_port, bulk_port);
	fflush(stdout);
	struct epoll_event evs[64];
	for (;;) {
		int n = epoll_wait(ep, evs, 64, -1);
		for (int i = 0; i < n; i++) {
			void *ptr = evs[i].data.ptr;
			if (ptr == &lb) {
				int fd = accept4(lb, NULL, NULL, SOCK_CLOEXEC);
				if (fd < 0)
					continue;
				pthread_t t;
				pthread_attr_t at;
				pthread_attr_init(&at);
				pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
				if (pthread_create(&t, &at, bulk_conn, (void *)(intptr_t)fd) != 0)
					close(fd);
				pthread_attr_destroy(&at);
			} else if (ptr == &le) {
				for (;;) {
					int fd = accept4(le, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
					if (fd < 0)
						break;
					nodelay(fd);
					struct echo_conn *c = malloc(sizeof(*c));
					if (!c) {
						close(fd);
						continue;
					}
					c->fd = fd, c->off = 0, c->len = 0;
					struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
				}
			} else {
				struct echo_conn *c = ptr;
				if (c->len == 0) {
					ssize_t k = read(c->fd, c->buf, sizeof(c->buf));
					if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) {
						echo_close(ep, c);
						continue;
					}
					if (k < 0)
						continue;
					c->off = 0, c->len = (size_t)k;
				}
				while (c->len > 0) {
					ssize_t k = send(c->fd, c->buf + c->off, c->len, MSG_NOSIGNAL);
					if (k < 0)
						break;
					c->off += (size_t)k, c->len -= (size_t)k;
				}
				if (c->len > 0 && errno != EAGAIN && errno != EINTR) {
					echo_close(ep, c);
					continue;
				}
				struct epoll_event cev = {.events = c->len ? EPOLLOUT : EPOLLIN, .data.ptr = c};
				epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
			}
		}
	}
}

/* ------------------------------------------------------------------------------------------------ */

static int pingpong(const struct target *a, size_t size, size_t count, size_t warmup)
{
	int fd = dial(a);
	if (fd < 0)
		fail("connect");
	uint8_t *rx = malloc(size);
	uint64_t *lat = malloc(sizeof(uint64_t) * count);
	if (!rx || !lat)
		fail("malloc");
	uint64_t offset = 0;
	for (size_t i = 0; i < warmup + count; i++) {
		const uint8_t *tx = pattern_at(offset);
		uint64_t t0 = now_ns();
		if (write_all(fd, tx, size) < 0)
			fail("write");
		int r = read_exact(fd, rx, size);
		uint64_t t1 = now_ns();
		if (r != 0)
			fail(r > 0 ? "early EOF" : "read");
		if (memcmp(rx, tx, size) != 0) {
			printf("{\"ok\":false,\"error\":\"echo mismatch at request %zu\"}\n", i);
			return 1;
		}
		if (i >= warmup)
			lat[i - warmup] = t1 - t0;
		offset += size;
	}
	close(fd);
	printf("{\"ok\":true,\"size\":%zu,\"count\":%zu,", size, count);
	print_latencies(lat, count);
	printf("}\n");
	return 0;
}

static int bulk(const struct target *a, uint64_t bytes, int dir)
{
	int fd = dial(a);
	if (fd < 0)
		fail("connect");
	uint8_t *buf = malloc(CHUNK);
	if (!buf)
		fail("malloc");
	struct bulk_hdr h = {BULK_MAGIC, (uint32_t)dir, bytes};
	double t0 = now_s();
	if (write_all(fd, &h, sizeof(h)) < 0)
		fail("write header");
	bool ok = true;
	uint64_t moved = 0;
	if (dir == 0) {
		while (moved < bytes) {
			uint64_t k = bytes - moved < CHUNK ? bytes - moved : CHUNK;
			if (write_all(fd, pattern_at(moved), k) < 0)
				fail("write");
			moved += k;
		}
		struct bulk_reply r;
		if (read_exact(fd, &r, sizeof(r)) != 0)
			fail("read reply");
		ok = r.ok && r.received == bytes;
		moved = r.received;
	} else {
		while (moved < bytes) {
			ssize_t k = read(fd, buf, CHUNK);
			if (k <= 0)
				break;
			if (!pattern_ok(buf, (size_t)k, moved))
				ok = false;
			moved += (uint64_t)k;
		}
		ok = ok && moved == bytes;
	}
	double secs = now_s() - t0;
	close(fd);
	printf("{\"ok\":%s,\"bytes\":%llu,\"seconds\":%.6f,\"gbit_s\":%.4f}\n", ok ? "true" : "false",
	       (unsigned long long)moved, secs, (double)moved * 8 / secs / 1e9);
	return ok ? 0 : 1;
}

static int crr(const struct target *a, size_t size, double seconds, size_t max)
{
	uint64_t *lat = malloc(sizeof(uint64_t) * max);
	uint8_t *rx = malloc(size);
	if (!lat || !rx)
		fail("malloc");
	size_t n = 0, errors = 0;
	char first_error[128] = "";
	double start = now_s(), end = start + seconds;
	uint64_t offset = 0;
	while (n < max && now_s() < end) {
		uint64_t t0 = now_ns();
		const uint8_t *tx = pattern_at(offset);
		int fd = dial(a);
		int r = -1;
		if (fd >= 0) {
			if (write_all(fd, tx, size) == 0)
				r = read_exact(fd, rx, size);
			if (r == 0 && memcmp(rx, tx, size) != 0) {
				errno = EPROTO;
				r = -1;
			}
			close(fd);
		}
		if (r != 0) {
			if (!errors)
				snprintf(first_error, sizeof(first_error), "%s", strerror(errno));
			errors++;
			continue;
		}
		lat[n++] = now_ns() - t0;
		offset += size;
	}
	double secs = now_s() - start;
	printf("{\"ok\":%s,\"conns\":%zu,\"errors\":%zu,\"first_error\":\"%s\",\"seconds\":%.4f,\"per_sec\":%.1f",
	       errors == 0 && n > 0 ? "true" : "false", n, errors, first_error, secs, (double)n / secs);
	if (n > 0) {
		printf(",");
		print_latencies(lat, n);
	}
	printf("}\n");
	return errors == 0 && n > 0 ? 0 : 1;
}

/* One 16-byte round trip tagged with the connection's index, so a reply on the wrong socket fails. */
static int round_trip(int fd, size_t i, size_t round)
{
	uint64_t msg[2] = {i, round}, got[2];
	if (write_all(fd, msg, sizeof(msg)) != 0 || read_exact(fd, got, sizeof(got)) != 0)
		return -1;
	return memcmp(msg, got, sizeof(msg)) == 0 ? 0 : -1;
}

/*
 * Many concurrent long-lived connections: opens `count`, checks a round trip on each, reports, holds
 * them all until SIGUSR1, then checks a second round trip on each and closes them.
 */
static int hold(const struct target *a, size_t count)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int *fds = calloc(count, sizeof(int));
	if (!fds)
		fail("calloc");
	size_t open_ok = 0, errors = 0;
	char first_error[128] = "";
	for (size_t i = 0; i < count; i++) {
		fds[i] = dial(a);
		if (fds[i] < 0 || round_trip(fds[i], i, 0) != 0) {
			if (!errors)
				snprintf(first_error, sizeof(first_error), "%s", strerror(errno));
			errors++;
			if (fds[i] >= 0)
				close(fds[i]);
			fds[i] = -1;
			continue;
		}
		open_ok++;
	}
	printf("{\"event\":\"held\",\"n\":%zu,\"errors\":%zu,\"first_error\":\"%s\"}\n", open_ok, errors, first_error);
	int sig;
	sigwait(&set, &sig);
	size_t again = 0;
	for (size_t i = 0; i < count; i++) {
		if (fds[i] < 0)
			continue;
		if (round_trip(fds[i], i, 1) == 0)
			again++;
		close(fds[i]);
	}
	printf("{\"ok\":%s,\"held\":%zu,\"second_round_ok\":%zu,\"errors\":%zu}\n",
	       errors == 0 && again == open_ok ? "true" : "false", open_ok, again, errors);
	return errors == 0 && again == open_ok ? 0 : 1;
}

static const char *opt(int argc, char **argv, const char *name, const char *def)
{
	for (int i = 2; i + 1 < argc; i++)
		if (!strcmp(argv[i], name))
			return argv[i + 1];
	return def;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	init_pattern();
	if (argc < 2)
		goto usage;
	const char *mode = argv[1];
	for (int i = 2; i < argc; i++)
		if (!strcmp(argv[i], "--dual-stack"))
			dual = true;
	if (!strcmp(mode, "server"))
		return server(atoi(opt(argc, argv, "--echo", "8080")), atoi(opt(argc, argv, "--bulk", "8081")));
	if (argc < 3)
		goto usage;
	struct target a = parse_target(argv[2]);
	if (!strcmp(mode, "pingpong"))
		return pingpong(&a, (size_t)atol(opt(argc, argv, "--size", "64")),
				(size_t)atol(opt(argc, argv, "--count", "10000")),
				(size_t)atol(opt(argc, argv, "--warmup", "1000")));
	if (!strcmp(mode, "bulk"))
		return bulk(&a, strtoull(opt(argc, argv, "--bytes", "1073741824"), NULL, 10),
			    !strcmp(opt(argc, argv, "--dir", "up"), "down"));
	if (!strcmp(mode, "hold"))
		return hold(&a, (size_t)atol(opt(argc, argv, "--count", "1000")));
	if (!strcmp(mode, "crr"))
		return crr(&a, (size_t)atol(opt(argc, argv, "--size", "64")), atof(opt(argc, argv, "--seconds", "2")),
			   (size_t)atol(opt(argc, argv, "--max", "10000")));
usage:
	fprintf(stderr, "usage: loadgen server|pingpong|bulk|crr|hold ...\n");
	return 2;
}
