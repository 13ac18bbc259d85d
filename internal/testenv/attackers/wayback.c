/*
 * The pod's own user attacking the way back: it watches its /tmp with
 * inotify and, the moment the profiler closes a file safeattach will read
 * back, makes it hostile before safeattach reads it:
 *   sparse  a recording (.safeattach-rec-*) or output (.safeattach-out-*)
 *           becomes a 900 MiB sparse file (it reads as zeros);
 *   log     an agent log (.safeattach-log-*) gets 1 MB of lines appended
 *           as soon as it is created, before the agent's own line.
 * Usage: wayback [sparse] [log]   (both when none is given)
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

static int want(int argc, char **argv, const char *mode) {
	if (argc < 2) return 1;
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], mode) == 0) return 1;
	return 0;
}

int main(int argc, char **argv) {
	int sparse = want(argc, argv, "sparse"), logs = want(argc, argv, "log");
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
			if (sparse && !(e->mask & IN_CREATE) && (strncmp(e->name, ".safeattach-rec-", 16) == 0 || strncmp(e->name, ".safeattach-out-", 16) == 0)) {
				truncate(path, 900L << 20);
			} else if (logs && (e->mask & IN_CREATE) && strncmp(e->name, ".safeattach-log-", 16) == 0) {
				int fd = open(path, O_WRONLY | O_APPEND);
				if (fd >= 0) {
					write(fd, line, sizeof line);
					close(fd);
				}
			}
		}
	}
}
