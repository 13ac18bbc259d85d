/*
 * A LOOK-ALIKE of a fixed async-profiler build (4.5). It is not
 * async-profiler: it carries the same exports and markers as the affected
 * look-alike, with the bare version literal "4.5", and it finds the loaded
 * libraries the way the fix does it safely: by reading /proc/self/maps
 * with no allocation under the loader lock. It never calls
 * dl_iterate_phdr, so it does not import it.
 *
 * For safeattach's profile tests it answers async-profiler's commands
 * as lookalike_protocol.h describes.
 */
#include "lookalike_protocol.h"

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

int Agent_OnAttach(void *vm, char *options, void *reserved) {
	(void)vm; (void)reserved;
	if (count_libraries() < 0) return 1;
	return lookalike_command(options);
}

int Agent_OnLoad(void *vm, char *options, void *reserved) {
	return Agent_OnAttach(vm, options, reserved);
}

int Java_one_profiler_AsyncProfiler_execute0(void) { return 0; }
int asprof_execute(const char *cmd, void *cb) { (void)cmd; (void)cb; return 0; }
const char *lookalike_version(void) { return version_literal; }
const char *lookalike_server(void) { return server_name; }
