/* A JVMTI test agent that is slow, not stuck: Agent_OnAttach sleeps for
 * the number of seconds given as its options (default 3), then returns 0.
 * It models a healthy attach that takes long, which must never be
 * reported as a deadlock. */
#include <stdlib.h>
#include <unistd.h>

int Agent_OnAttach(void *vm, char *options, void *reserved) {
	(void)vm; (void)reserved;
	int secs = options && *options ? atoi(options) : 3;
	while (secs > 0) secs = sleep(secs);
	return 0;
}
