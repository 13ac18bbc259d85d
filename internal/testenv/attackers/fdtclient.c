/*
 * A hostile agent speaking async-profiler's fdtransfer protocol, run
 * inside a pod as the pod's own user: it asks a descriptor server for
 * more than any profile needs and reports what it got, one key=value a
 * line, then DONE. It keeps every descriptor it was given until its
 * standard input closes, so the test can measure what they cost.
 *
 * It reads the server's socket name (@NAME) as its first line of input.
 * Usage:
 *   fdtclient kallsyms N        ask N times for kallsyms; try to write
 *                               the first copy and read its seals
 *   fdtclient tracepoint ID     a tracepoint with PERF_SAMPLE_RAW, then
 *                               without it
 *   fdtclient physaddr          a page-fault event with PHYS_ADDR
 *   fdtclient cpu               a cpu-clock event as async-profiler 4.5
 *                               asks for it, and the same thread again
 *   fdtclient threads T         T threads each ask for their own event
 *   fdtclient again T           T threads ask, keep their events, hang up,
 *                               connect again, and T new threads ask
 *   fdtclient unknown N T       with T threads alive, one request for a
 *                               thread id the pod does not have (the
 *                               server maps its threads), THREADS, then
 *                               N more
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

struct request {
	uint32_t type;
	int32_t tid;
	int32_t cpu;
	uint32_t pad;
	struct perf_event_attr attr;
	char probe[256];
};

static int sock;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* ask sends a request and returns the descriptor (or -errno). */
static int ask(struct request *r, size_t len) {
	pthread_mutex_lock(&mu);
	if (send(sock, r, len, 0) < 0) {
		pthread_mutex_unlock(&mu);
		return -EPIPE;
	}
	char buf[64];
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {buf, sizeof buf};
	struct msghdr m = {0};
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = cbuf;
	m.msg_controllen = sizeof cbuf;
	ssize_t n = recvmsg(sock, &m, 0);
	pthread_mutex_unlock(&mu);
	if (n < 8) return -EPIPE;
	int32_t err;
	memcpy(&err, buf + 4, 4);
	if (err) return -err;
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	if (!c || c->cmsg_type != SCM_RIGHTS) return -ENODATA;
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof fd);
	return fd;
}

static int ask_perf(int tid, struct perf_event_attr *attr) {
	struct request r = {0};
	r.type = 0;
	r.tid = tid;
	r.cpu = -1;
	r.attr = *attr;
	r.attr.size = sizeof r.attr;
	return ask(&r, offsetof(struct request, probe) + 1);
}

/* cpu_clock is the attribute block async-profiler 4.5 sends for -e cpu. */
static struct perf_event_attr cpu_clock(void) {
	struct perf_event_attr a = {0};
	a.type = PERF_TYPE_SOFTWARE;
	a.config = PERF_COUNT_SW_CPU_CLOCK;
	a.precise_ip = 2;
	a.sample_period = 10000000;
	a.sample_type = PERF_SAMPLE_CALLCHAIN;
	a.disabled = 1;
	a.wakeup_events = 1;
	a.read_format = PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING;
	return a;
}

static int gettid_(void) { return (int)syscall(SYS_gettid); }

static void report(const char *key, int fd) {
	if (fd >= 0) printf("%s=ok\n", key);
	else printf("%s=%s\n", key, strerrorname_np(-fd) ? strerrorname_np(-fd) : "?");
}

static int granted, refused, refusedEPERM;
static pthread_barrier_t ready;
static volatile int stop;

static void *asker(void *arg) {
	struct perf_event_attr a = cpu_clock();
	int fd = ask_perf(gettid_(), &a);
	pthread_mutex_lock(&mu);
	if (fd >= 0) granted++;
	else {
		refused++;
		if (fd == -EPERM) refusedEPERM++;
	}
	pthread_mutex_unlock(&mu);
	pthread_barrier_wait(&ready);
	while (!stop) pause();
	return arg;
}

static void *sleeper(void *arg) {
	pthread_barrier_wait(&ready);
	while (!stop) pause();
	return arg;
}

static void spawn(int n, void *(*fn)(void *)) {
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setstacksize(&at, 64 << 10);
	pthread_barrier_init(&ready, NULL, n + 1);
	for (int i = 0; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, &at, fn, NULL)) {
			perror("pthread_create");
			exit(1);
		}
	}
	pthread_barrier_wait(&ready);
}

int main(int argc, char **argv) {
	if (argc < 2) return 2;
	char name[128];
	if (!fgets(name, sizeof name, stdin)) return 2;
	name[strcspn(name, "\n")] = 0;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	size_t len = strlen(name);
	if (name[0] != '@' || len >= sizeof sun.sun_path) return 2;
	memcpy(sun.sun_path + 1, name + 1, len - 1); /* abstract: a leading NUL */
	socklen_t sunlen = offsetof(struct sockaddr_un, sun_path) + len;
	sock = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	if (connect(sock, (struct sockaddr *)&sun, sunlen) < 0) {
		perror("connect");
		return 1;
	}
	const char *mode = argv[1];
	if (!strcmp(mode, "kallsyms") && argc > 2) {
		int n = atoi(argv[2]), got = 0, first = -1;
		for (int i = 0; i < n; i++) {
			uint32_t type = 1;
			struct request r;
			memcpy(&r, &type, 4);
			int fd = ask(&r, 4);
			if (fd >= 0) {
				got++;
				if (first < 0) first = fd;
			} else if (i == 0 || i == 1) {
				report(i == 0 ? "kallsyms_first" : "kallsyms_second", fd);
			}
		}
		printf("kallsyms_granted=%d\n", got);
		if (first >= 0) {
			errno = 0;
			ssize_t w = write(first, "x", 1);
			printf("kallsyms_write=%s\n", w == 1 ? "ok" : strerrorname_np(errno));
			printf("kallsyms_seals=%d\n", fcntl(first, F_GET_SEALS));
		}
	} else if (!strcmp(mode, "tracepoint") && argc > 2) {
		struct perf_event_attr a = cpu_clock();
		a.type = PERF_TYPE_TRACEPOINT;
		a.config = strtoull(argv[2], NULL, 10);
		a.precise_ip = 0;
		a.sample_period = 1;
		a.sample_type = PERF_SAMPLE_CALLCHAIN | PERF_SAMPLE_RAW;
		report("tracepoint_raw", ask_perf(gettid_(), &a));
		a.sample_type = PERF_SAMPLE_CALLCHAIN;
		report("tracepoint", ask_perf(gettid_(), &a));
	} else if (!strcmp(mode, "physaddr")) {
		struct perf_event_attr a = cpu_clock();
		a.config = PERF_COUNT_SW_PAGE_FAULTS;
		a.sample_period = 1;
		a.sample_type = PERF_SAMPLE_CALLCHAIN | PERF_SAMPLE_PHYS_ADDR;
		report("physaddr", ask_perf(gettid_(), &a));
	} else if (!strcmp(mode, "cpu")) {
		struct perf_event_attr a = cpu_clock();
		report("cpu", ask_perf(gettid_(), &a));
		report("cpu_again", ask_perf(gettid_(), &a));
		a.inherit = 1;
		report("cpu_inherit", ask_perf(gettid_(), &a));
	} else if (!strcmp(mode, "threads") && argc > 2) {
		spawn(atoi(argv[2]), asker);
		printf("granted=%d\nrefused=%d\nrefused_eperm=%d\n", granted, refused, refusedEPERM);
	} else if (!strcmp(mode, "again") && argc > 2) {
		int n = atoi(argv[2]);
		spawn(n, asker);
		printf("granted1=%d\n", granted);
		fflush(stdout);
		close(sock);
		granted = refused = refusedEPERM = 0;
		for (int try = 0;; try++) { /* the server listens again when served again */
			sock = socket(AF_UNIX, SOCK_SEQPACKET, 0);
			if (connect(sock, (struct sockaddr *)&sun, sunlen) == 0) break;
			close(sock);
			if (try == 500) return 1;
			usleep(10000);
		}
		spawn(n, asker);
		printf("granted2=%d\nrefused_eperm2=%d\n", granted, refusedEPERM);
	} else if (!strcmp(mode, "unknown") && argc > 3) {
		int n = atoi(argv[2]);
		spawn(atoi(argv[3]), sleeper);
		struct perf_event_attr a = cpu_clock();
		ask_perf(0x3ffeffff, &a); /* the server maps our threads */
		printf("THREADS\n");
		fflush(stdout);
		int esrch = 0;
		for (int i = 0; i < n; i++)
			if (ask_perf(0x3fff0000 + i, &a) == -ESRCH) esrch++;
		printf("esrch=%d\n", esrch);
	} else {
		return 2;
	}
	printf("DONE\n");
	fflush(stdout);
	/* Hold what was given until told to go. */
	char c;
	while (read(0, &c, 1) > 0) {
	}
	return 0;
}
