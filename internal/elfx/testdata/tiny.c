/* Seed for the ELF probes' tests and fuzz corpus. Rebuild with:
 *   gcc -shared -fPIC -Os -s -o tiny.so tiny.c
 */
#define _GNU_SOURCE
#include <link.h>
#include <stdlib.h>

const char *malloc_conf = "prof:true,lg_prof_sample:19";
static const char v[] __attribute__((used)) = "3.0-2dba71f";
static const char s[] __attribute__((used)) = "Async-profiler Server";

static int cb(struct dl_phdr_info *i, size_t n, void *d) { (void)i; (void)n; free(malloc(64)); (void)d; return 0; }
int Agent_OnAttach(void *vm, char *o, void *r) { (void)vm; (void)o; (void)r; return dl_iterate_phdr(cb, 0); }
