/*
 * A LOOK-ALIKE of a fixed async-profiler build (4.5). It is not
 * async-profiler: it carries the same exports and markers as the affected
 * look-alike, with the bare version literal "4.5", and it finds the loaded
 * libraries the way the fix does it safely: by reading /proc/self/maps
 * with no allocation under the loader lock. It never calls
 * dl_iterate_phdr, so it does not import it.
 *
 * For safeattach's profile tests it also answers the part of
 * async-profiler's command protocol they use: "start,event=E,file=F"
 * remembers the event, "stop,file=F" writes a small collapsed-stack
 * profile to F. The profile is made up; nothing is sampled. Like
 * async-profiler it writes its messages to the file named by log=
 * ("Profiling started", "[ERROR] Unsupported event type", "[ERROR]
 * Profiler is not active") and fails such a command with a non-zero code.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char version_literal[] __attribute__((used)) = "4.5";
static const char server_name[] __attribute__((used)) = "Async-profiler Server";

static int count_libraries(void) {
	int fd = open("/proc/self/maps", O_RDONLY);
	if (fd < 0) return -1;
	char buf[4096];
	int libs = 0;
	ssize_t n;
	while ((n = read(fd, buf, sizeof buf)) > 0)
		for (ssize_t i = 0; i + 3 < n; i++)
			if (memcmp(buf + i, ".so", 3) == 0) libs++;
	close(fd);
	/* Allocate freely now: no loader lock is held. */
	for (int i = 0; i < 300; i++) free(malloc(16 + (i * 7919) % (64 * 1024)));
	return libs;
}

static char event[64] = "cpu";
static int started;

/* option_value copies the value of key= from a comma-separated list. */
static int option_value(const char *opts, const char *key, char *out, size_t n) {
	size_t klen = strlen(key);
	for (const char *p = opts; p && *p; ) {
		if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
			size_t len = strcspn(p + klen + 1, ",");
			if (len >= n) return -1;
			memcpy(out, p + klen + 1, len);
			out[len] = 0;
			return 0;
		}
		p = strchr(p, ',');
		if (p) p++;
	}
	return -1;
}

/* say appends one line to the log= file, if one was given. */
static void say(const char *options, const char *line) {
	char log[4096];
	if (option_value(options, "log", log, sizeof log) != 0) return;
	int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (fd < 0) return;
	write(fd, line, strlen(line));
	write(fd, "\n", 1);
	close(fd);
}

/* write_file puts text into the file= option's file. */
static int write_file(const char *options, const char *text) {
	char file[4096];
	if (option_value(options, "file", file, sizeof file) != 0) return 1;
	int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) return 0;
	int n = strlen(text);
	int ok = write(fd, text, n) == n && write(fd, "\n", 1) == 1;
	close(fd);
	return ok;
}

/* write_profile writes the made-up collapsed profile to file=. */
static int write_profile(const char *options) {
	char line[256];
	snprintf(line, sizeof line, "java.lang.Thread.run;Target.churn;java.util.zip.Deflater.deflate [%s] 42\nTarget.main;java.lang.Thread.sleep [%s] 7", event, event);
	return write_file(options, line);
}

static int known_event(const char *e) {
	static const char *events[] = {"cpu", "wall", "alloc", "lock", "itimer", "ctimer", 0};
	for (int i = 0; events[i]; i++)
		if (strcmp(e, events[i]) == 0) return 1;
	return 0;
}

int Agent_OnAttach(void *vm, char *options, void *reserved) {
	(void)vm; (void)reserved;
	if (count_libraries() < 0) return 1;
	if (!options) return 0;
	if (strncmp(options, "status", 6) == 0)
		return write_file(options, started ? "Profiling is running" : "Profiler is not active") ? 0 : 202;
	if (strncmp(options, "list", 4) == 0)
		return write_file(options, "Basic events:\n  cpu\n  alloc\n  lock\n  wall\n  itimer\n  ctimer") ? 0 : 202;
	if (strncmp(options, "meminfo", 7) == 0)
		return write_file(options, "Call trace storage: 10 KB\nFlight recording: 0 bytes\nTotal: 10 KB") ? 0 : 202;
	if (strncmp(options, "dump", 4) == 0) {
		if (!started) {
			say(options, "[ERROR] Profiler is not active");
			return 200;
		}
		return write_profile(options) ? 0 : 202;
	}
	if (strncmp(options, "start", 5) == 0 || strncmp(options, "resume", 6) == 0) {
		char want[64] = "cpu";
		option_value(options, "event", want, sizeof want);
		if (!known_event(want)) {
			say(options, "[ERROR] Unsupported event type");
			return 200;
		}
		if (started && strncmp(options, "start", 5) == 0) {
			say(options, "[ERROR] Profiler already started");
			return 200;
		}
		strcpy(event, want);
		started = 1;
		say(options, "Profiling started");
		return 0;
	}
	if (strncmp(options, "stop", 4) == 0) {
		if (!started) {
			say(options, "[ERROR] Profiler is not active");
			return 200;
		}
		started = 0;
		return write_profile(options) ? 0 : 202;
	}
	return 0;
}

int Agent_OnLoad(void *vm, char *options, void *reserved) {
	return Agent_OnAttach(vm, options, reserved);
}

int Java_one_profiler_AsyncProfiler_execute0(void) { return 0; }
int asprof_execute(const char *cmd, void *cb) { (void)cmd; (void)cb; return 0; }
const char *lookalike_version(void) { return version_literal; }
const char *lookalike_server(void) { return server_name; }
