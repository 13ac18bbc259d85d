/* A JVMTI test agent that never returns from Agent_OnAttach: it models an
 * agent hung inside the attach, which blocks the JVM's attach listener. */
#include <unistd.h>

int Agent_OnAttach(void *vm, char *options, void *reserved) {
	(void)vm; (void)options; (void)reserved;
	for (;;) pause();
	return 0;
}
