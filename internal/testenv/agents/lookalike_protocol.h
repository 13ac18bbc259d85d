/*
 * The part of async-profiler's command protocol the look-alike agents
 * answer, shared by both so that the affected one can be profiled with
 * too: "start,event=E,file=F" remembers the event, "stop,file=F" and
 * "dump,file=F" write a small made-up collapsed-stack profile to F,
 * "status", "list" and "meminfo" write what asprof would print. Messages
 * go to the log= file as async-profiler writes them, and a failed command
 * returns non-zero. "timeout=N" on start stops the profiler by itself N
 * seconds later and writes the profile to the start's file=, as
 * async-profiler does.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char event[64] = "cpu";
static int started;
static time_t started_at;
static unsigned epoch; /* bumped by every start and stop */
static char start_file[4096];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

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

static void profile_text(char *line, size_t n) {
	snprintf(line, n, "java.lang.Thread.run;Target.churn;java.util.zip.Deflater.deflate [%s] 42\nTarget.main;java.lang.Thread.sleep [%s] 7", event, event);
}

/* write_profile writes the made-up collapsed profile to file=. */
static int write_profile(const char *options) {
	char line[256];
	profile_text(line, sizeof line);
	return write_file(options, line);
}

static int write_profile_to(const char *file) {
	char line[256];
	if (!*file) return 1;
	profile_text(line, sizeof line);
	int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) return 0;
	int n = strlen(line);
	int ok = write(fd, line, n) == n && write(fd, "\n", 1) == 1;
	close(fd);
	return ok;
}

static int known_event(const char *e) {
	static const char *events[] = {"cpu", "wall", "alloc", "lock", "itimer", "ctimer", 0};
	for (int i = 0; events[i]; i++)
		if (strcmp(e, events[i]) == 0) return 1;
	return 0;
}

static int write_profile_to(const char *file);

struct expiry { unsigned epoch; int seconds; };

/* expire is the timeout= thread: it stops the profile it was started
 * for, unless a stop or a new start came first. */
static void *expire(void *arg) {
	struct expiry e = *(struct expiry *)arg;
	free(arg);
	sleep(e.seconds);
	pthread_mutex_lock(&lock);
	if (started && epoch == e.epoch) {
		started = 0;
		epoch++;
		write_profile_to(start_file);
	}
	pthread_mutex_unlock(&lock);
	return 0;
}

static int command(const char *options);

/* lookalike_command runs one Agent_OnAttach options string. */
static int lookalike_command(const char *options) {
	pthread_mutex_lock(&lock);
	int rc = command(options);
	pthread_mutex_unlock(&lock);
	return rc;
}

static int command(const char *options) {
	if (!options) return 0;
	if (strncmp(options, "status", 6) == 0) {
		char text[128];
		if (started) snprintf(text, sizeof text, "Profiling is running for %ld seconds", (long)(time(0) - started_at));
		else snprintf(text, sizeof text, "Profiler is not active");
		return write_file(options, text) ? 0 : 202;
	}
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
		if (!started) started_at = time(0);
		started = 1;
		epoch++;
		start_file[0] = 0;
		option_value(options, "file", start_file, sizeof start_file);
		char seconds[32];
		if (option_value(options, "timeout", seconds, sizeof seconds) == 0 && atoi(seconds) > 0) {
			struct expiry *e = malloc(sizeof *e);
			e->epoch = epoch;
			e->seconds = atoi(seconds);
			pthread_t th;
			if (pthread_create(&th, 0, expire, e) == 0) pthread_detach(th);
		}
		say(options, "Profiling started");
		return 0;
	}
	if (strncmp(options, "stop", 4) == 0) {
		if (!started) {
			say(options, "[ERROR] Profiler is not active");
			return 200;
		}
		started = 0;
		epoch++;
		return write_profile(options) ? 0 : 202;
	}
	return 0;
}
