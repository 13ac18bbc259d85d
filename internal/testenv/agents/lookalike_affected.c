/*
 * A LOOK-ALIKE of an affected async-profiler nightly build (3.0-<hex>,
 * between commits 76311145 and ebd88946). It is not async-profiler: it
 * carries the markers preflight uses to classify one (the exports
 * Agent_OnAttach, Java_one_profiler_AsyncProfiler_execute0 and
 * asprof_execute, the bare version literal "3.0-2dba71f" in .rodata, the
 * string "Async-profiler Server", an import of dl_iterate_phdr) and it
 * reproduces the behaviour that deadlocked JVMs in async-profiler #1147
 * and #1151: while walking the loaded libraries with dl_iterate_phdr
 * (holding glibc's loader lock) it makes hundreds of allocations of assorted
 * sizes up to 64 KiB per library, over several walks. It answers the
 * same commands as the fixed look-alike (lookalike_protocol.h).
 */
#define _GNU_SOURCE
#include <link.h>
#include <stdlib.h>
#include <string.h>

#include "lookalike_protocol.h"

static const char version_literal[] __attribute__((used)) = "3.0-2dba71f";
static const char server_name[] __attribute__((used)) = "Async-profiler Server";

static int visit(struct dl_phdr_info *info, size_t size, void *data) {
	(void)info; (void)size;
	unsigned *seed = data;
	void *keep[64] = {0};
	for (int i = 0; i < 300; i++) {
		*seed = *seed * 1103515245u + 12345u;
		size_t n = 16 + (*seed >> 8) % (64 * 1024);
		void *p = malloc(n);
		if (p) memset(p, 0xA5, n < 256 ? n : 256);
		int slot = i % 64;
		free(keep[slot]);
		keep[slot] = p;
	}
	for (int i = 0; i < 64; i++) free(keep[i]);
	return 0;
}

static void parse_libraries(void) {
	unsigned seed = 42;
	for (int walk = 0; walk < 20; walk++) dl_iterate_phdr(visit, &seed);
}

int Agent_OnAttach(void *vm, char *options, void *reserved) {
	(void)vm; (void)reserved;
	parse_libraries();
	return lookalike_command(options);
}

int Agent_OnLoad(void *vm, char *options, void *reserved) {
	return Agent_OnAttach(vm, options, reserved);
}

int Java_one_profiler_AsyncProfiler_execute0(void) { return 0; }
int asprof_execute(const char *cmd, void *cb) { (void)cmd; (void)cb; return 0; }
const char *lookalike_version(void) { return version_literal; }
const char *lookalike_server(void) { return server_name; }
