// SPDX-License-Identifier: Apache-2.0
/*
 * A minimal sidecar stand-in for the benchmark: accepts on the outbound and inbound capture ports,
 * asks the accepted socket for SO_ORIGINAL_DST (answered by conntrack under iptables REDIRECT, by our
 * getsockopt program under the eBPF datapath) and forwards bytes to that destination.
 *
 * Why this shape:
 * - One thread, level-triggered epoll, non-blocking sockets. The whole benchmark runs on one CPU, so
 *   threads would only add context switches; per message and direction this costs one epoll_wait, one
 *   read and one write, which keeps the proxy's own share of a round trip small and equal for every
 *   interception path.
 * - read()/write() through a user buffer, not splice(2): the sockmap fast path delivers a peer's bytes
 *   into the receiving socket's psock queue, which only recvmsg() drains; tcp_splice_read looks at the
 *   plain receive queue and would never see them. Envoy reads with readv(), i.e. recvmsg(), too.
 * - Upstream connections are made by this process, which runs as the proxy uid (1337): that is what
 *   both the iptables rules (owner match) and connect4 (uid check) use to leave them alone.
 * - Inbound connections do what Istio's Envoy does since 1.10: connect to the original destination
 *   (the pod's own IP and port) from source 127.0.0.6, which istio-iptables exempts and our connect4
 *   must leave alone. A datapath that captures that hop sends it back to our inbound port; such an
 *   accept (source 127.0.0.6, or an original destination that is a capture port) is counted as a loop
 *   and closed at once, so a loop costs one extra accept and fails the measurement instead of spinning.
 *
 * - With --dual-stack it listens on [::] with IPV6_V6ONLY off, as Envoy's dual-stack listeners do, and
 *   asks an IPv6 connection for its original destination at SOL_IPV6 (ip6tables' conntrack, or our
 *   getsockopt program); the inbound hop of an IPv6 connection leaves from ::6. IPv4 connections on
 *   the same listener (v4-mapped) are asked at SOL_IP. Without the flag everything is AF_INET.
 *
 * Stdout: one JSON object per line ("listening" per port at start, "stats" on SIGUSR1).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

static bool dual_stack;

#define BUF_SIZE (128 * 1024)
/* 127.0.0.6: the source of Envoy's inbound passthrough connections. */
#define PASSTHROUGH_SRC 0x7f000006
#define MAX_EVENTS 64

enum tag { T_LISTEN_OUT, T_LISTEN_IN, T_SIGNAL, T_END };

struct pair;

/* What an epoll event points at: a listener, the signalfd, or one end of a proxied connection. */
struct handle {
	enum tag tag;
	int fd;
	struct pair *pair; /* T_END only */
	int side;          /* T_END only: 0 = accepted (downstream), 1 = upstream */
	uint32_t armed;    /* events currently registered */
	bool registered;   /* still in the epoll set */
};

/* One proxied connection. buf[i] holds bytes read from side i not yet written to side 1-i. */
struct pair {
	struct handle end[2];
	char *buf[2];
	size_t off[2], len[2];
	bool eof[2];  /* read EOF from side i */
	bool shut[2]; /* sent FIN (SHUT_WR) to side i */
	bool connecting;
	bool dead;          /* closed; freed after the current batch of events, which may still name it */
	struct pair *next_dead;
};

static struct {
	unsigned long accepted, origdst_errors, upstream_errors, closed, loops;
	long active;
} stats;

static int ep;
static struct pair *graveyard;

static void die(const char *what)
{
	fprintf(stderr, "fastproxy: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void arm(struct handle *h, uint32_t events)
{
	if (!h->registered || h->armed == events)
		return;
	struct epoll_event ev = {.events = events, .data.ptr = h};
	if (epoll_ctl(ep, EPOLL_CTL_MOD, h->fd, &ev) < 0)
		die("epoll_ctl mod");
	h->armed = events;
}

static void add(struct handle *h, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = h};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, h->fd, &ev) < 0)
		die("epoll_ctl add");
	h->armed = events;
	h->registered = true;
}

/* An end that has both read EOF and sent FIN has nothing left to wait for; left in a level-triggered
 * set it would report EPOLLHUP forever while the other direction finishes. */
static void retire(struct handle *h)
{
	if (!h->registered)
		return;
	epoll_ctl(ep, EPOLL_CTL_DEL, h->fd, NULL);
	h->registered = false;
}

static void pair_close(struct pair *p)
{
	for (int i = 0; i < 2; i++)
		close(p->end[i].fd); /* also removes it from the epoll set */
	p->dead = true;
	p->next_dead = graveyard;
	graveyard = p;
	stats.active--;
	stats.closed++;
}

static void bury(void)
{
	while (graveyard) {
		struct pair *p = graveyard;
		graveyard = p->next_dead;
		free(p->buf[0]);
		free(p->buf[1]);
		free(p);
	}
}

/* Registers what each end waits for now: input while its buffer is empty, output while the other
 * direction has bytes pending for it (or the connect is still in progress). */
static void rearm(struct pair *p)
{
	for (int i = 0; i < 2; i++) {
		uint32_t ev = 0;
		if (p->connecting) {
			ev = i == 1 ? EPOLLOUT : 0;
		} else {
			if (!p->eof[i] && p->len[i] == 0)
				ev |= EPOLLIN;
			if (p->len[1 - i] > 0)
				ev |= EPOLLOUT;
		}
		if (p->eof[i] && p->shut[i])
			retire(&p->end[i]);
		else
			arm(&p->end[i], ev);
	}
}

/* Writes what side `from` left in its buffer to the other side. Returns -1 on a fatal error. */
static int flush(struct pair *p, int from)
{
	int to = 1 - from;
	while (p->len[from] > 0) {
		ssize_t n = send(p->end[to].fd, p->buf[from] + p->off[from], p->len[from], MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			return -1;
		}
		p->off[from] += (size_t)n;
		p->len[from] -= (size_t)n;
	}
	p->off[from] = 0;
	if (p->eof[from] && !p->shut[to]) {
		shutdown(p->end[to].fd, SHUT_WR);
		p->shut[to] = true;
	}
	return 0;
}

/* Reads once from `side` and forwards at once; level-triggered epoll brings us back for the rest. */
static int pump(struct pair *p, int side)
{
	ssize_t n = read(p->end[side].fd, p->buf[side], BUF_SIZE);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	if (n == 0)
		p->eof[side] = true;
	else
		p->len[side] = (size_t)n;
	return flush(p, side);
}

static void on_end(struct handle *h, uint32_t events)
{
	struct pair *p = h->pair;
	int s = h->side;
	if (p->dead)
		return;
	if (events & EPOLLERR) {
		pair_close(p);
		return;
	}
	if (p->connecting) {
		if (s == 0) {
			/* The client hung up before the upstream answered. */
			if (events & EPOLLHUP)
				pair_close(p);
			return;
		}
		int err = 0;
		socklen_t len = sizeof(err);
		getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			stats.upstream_errors++;
			pair_close(p);
			return;
		}
		p->connecting = false;
	} else {
		if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !p->eof[s] && p->len[s] == 0 && pump(p, s) < 0) {
			pair_close(p);
			return;
		}
		if ((events & EPOLLOUT) && flush(p, 1 - s) < 0) {
			pair_close(p);
			return;
		}
	}
	if (p->eof[0] && p->eof[1] && p->len[0] == 0 && p->len[1] == 0) {
		pair_close(p);
		return;
	}
	rearm(p);
}

static void nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void on_accept(struct handle *l, bool inbound, uint16_t own_port)
{
	for (;;) {
		struct sockaddr_in6 peer6;
		socklen_t plen = sizeof(peer6);
		int fd = accept4(l->fd, (struct sockaddr *)&peer6, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
				return;
			die("accept4");
		}
		stats.accepted++;
		/* Native IPv6 on a dual-stack listener; v4-mapped peers are IPv4 on the wire. */
		bool six = peer6.sin6_family == AF_INET6 && !IN6_IS_ADDR_V4MAPPED(&peer6.sin6_addr);
		struct in6_addr pass6 = IN6ADDR_ANY_INIT;
		pass6.s6_addr[15] = 6;
		uint32_t peer4 = 0;
		if (peer6.sin6_family == AF_INET)
			peer4 = ((struct sockaddr_in *)&peer6)->sin_addr.s_addr;
		else if (!six)
			memcpy(&peer4, &peer6.sin6_addr.s6_addr[12], 4);
		/* Our own inbound upstream coming back to us: interception caught what it must exempt. */
		if (inbound && (six ? !memcmp(&peer6.sin6_addr, &pass6, sizeof(pass6)) : peer4 == htonl(PASSTHROUGH_SRC))) {
			stats.loops++;
			close(fd);
			continue;
		}
		struct sockaddr_in6 up6;
		struct sockaddr_in up;
		uint16_t up_port;
		if (six) {
			socklen_t olen = sizeof(up6);
			if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &up6, &olen) < 0 || olen < sizeof(up6) ||
			    up6.sin6_family != AF_INET6) {
				stats.origdst_errors++;
				close(fd);
				continue;
			}
			up_port = ntohs(up6.sin6_port);
		} else {
			socklen_t olen = sizeof(up);
			if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &up, &olen) < 0 || olen < sizeof(up) ||
			    up.sin_family != AF_INET) {
				stats.origdst_errors++;
				close(fd);
				continue;
			}
			up_port = ntohs(up.sin_port);
		}
		/* A connection whose "original" destination is a capture port would come straight back. */
		if (up_port == own_port) {
			stats.loops++;
			close(fd);
			continue;
		}
		int ufd = socket(six ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (ufd < 0)
			die("socket");
		if (inbound && six) {
			struct sockaddr_in6 src = {.sin6_family = AF_INET6, .sin6_addr = pass6};
			if (bind(ufd, (struct sockaddr *)&src, sizeof(src)) < 0)
				die("bind ::6");
		} else if (inbound) {
			struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(PASSTHROUGH_SRC)};
			if (bind(ufd, (struct sockaddr *)&src, sizeof(src)) < 0)
				die("bind 127.0.0.6");
		}
		nodelay(fd);
		nodelay(ufd);
		int rc = six ? connect(ufd, (struct sockaddr *)&up6, sizeof(up6))
			     : connect(ufd, (struct sockaddr *)&up, sizeof(up));
		if (rc < 0 && errno != EINPROGRESS) {
			stats.upstream_errors++;
			close(fd);
			close(ufd);
			continue;
		}
		struct pair *p = calloc(1, sizeof(*p));
		if (!p)
			die("calloc");
		p->buf[0] = malloc(BUF_SIZE);
		p->buf[1] = malloc(BUF_SIZE);
		if (!p->buf[0] || !p->buf[1])
			die("malloc");
		p->connecting = rc < 0;
		for (int i = 0; i < 2; i++) {
			p->end[i].tag = T_END;
			p->end[i].pair = p;
			p->end[i].side = i;
		}
		p->end[0].fd = fd;
		p->end[1].fd = ufd;
		add(&p->end[0], 0);
		add(&p->end[1], 0);
		stats.active++;
		rearm(p);
	}
}

static int listen_on(uint16_t port)
{
	int fd = socket(dual_stack ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	int one = 1, zero = 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_ANY_INIT};
	if (dual_stack && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0)
		die("IPV6_V6ONLY");
	if (dual_stack ? bind(fd, (struct sockaddr *)&a6, sizeof(a6)) : bind(fd, (struct sockaddr *)&a, sizeof(a)))
		die("bind");
	if (listen(fd, 4096) < 0)
		die("listen");
	return fd;
}

static void print_stats(void)
{
	printf("{\"event\":\"stats\",\"accepted\":%lu,\"origdst_errors\":%lu,\"upstream_errors\":%lu,"
	       "\"loops\":%lu,\"closed\":%lu,\"active\":%ld}\n",
	       stats.accepted, stats.origdst_errors, stats.upstream_errors, stats.loops, stats.closed, stats.active);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	int out_port = 0, in_port = 0;
	for (int i = 1; i < argc; i += 2) {
		if (!strcmp(argv[i], "--dual-stack")) {
			dual_stack = true;
			i--;
		} else if (i + 1 >= argc) {
			fprintf(stderr, "usage: fastproxy --outbound PORT --inbound PORT [--dual-stack]\n");
			return 2;
		} else if (!strcmp(argv[i], "--outbound"))
			out_port = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--inbound"))
			in_port = atoi(argv[i + 1]);
		else {
			fprintf(stderr, "usage: fastproxy --outbound PORT --inbound PORT [--dual-stack]\n");
			return 2;
		}
	}
	if (!out_port && !in_port) {
		fprintf(stderr, "usage: fastproxy --outbound PORT --inbound PORT\n");
		return 2;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	struct handle sig = {.tag = T_SIGNAL, .fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)};
	if (sig.fd < 0)
		die("signalfd");
	add(&sig, EPOLLIN);

	struct handle lout = {.tag = T_LISTEN_OUT, .fd = -1}, lin = {.tag = T_LISTEN_IN, .fd = -1};
	if (out_port) {
		lout.fd = listen_on((uint16_t)out_port);
		add(&lout, EPOLLIN);
		printf("{\"event\":\"listening\",\"kind\":\"outbound\",\"port\":%d}\n", out_port);
	}
	if (in_port) {
		lin.fd = listen_on((uint16_t)in_port);
		add(&lin, EPOLLIN);
		printf("{\"event\":\"listening\",\"kind\":\"inbound\",\"port\":%d}\n", in_port);
	}
	fflush(stdout);

	struct epoll_event evs[MAX_EVENTS];
	for (;;) {
		int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			struct handle *h = evs[i].data.ptr;
			switch (h->tag) {
			case T_LISTEN_OUT:
				on_accept(h, false, (uint16_t)out_port);
				break;
			case T_LISTEN_IN:
				on_accept(h, true, (uint16_t)in_port);
				break;
			case T_SIGNAL: {
				struct signalfd_siginfo si;
				while (read(sig.fd, &si, sizeof(si)) == sizeof(si)) {
					if (si.ssi_signo == SIGUSR1) {
						print_stats();
					} else {
						print_stats();
						return 0;
					}
				}
				break;
			}
			case T_END:
				on_end(h, evs[i].events);
				break;
			}
		}
		bury();
	}
}
