/*
 * A plain JVMTI test agent (not a profiler): Agent_OnAttach writes the
 * options it received to the file named by the part of the options after
 * "out=" (up to the first comma) and returns 0.
 */
#include <stdio.h>
#include <string.h>

int Agent_OnAttach(void *vm, char *options, void *reserved) {
	(void)vm; (void)reserved;
	if (!options) return 0;
	const char *p = strstr(options, "out=");
	if (!p) return 0;
	char path[4096];
	size_t n = strcspn(p + 4, ",");
	if (n >= sizeof path) return 2;
	memcpy(path, p + 4, n);
	path[n] = 0;
	FILE *f = fopen(path, "w");
	if (!f) return 3;
	fputs(options, f);
	fclose(f);
	return 0;
}
