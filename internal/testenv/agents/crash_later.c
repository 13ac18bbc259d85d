/* A JVMTI test agent that crashes the JVM a little after attaching: its
 * Agent_OnAttach returns 0 at once and starts a thread that, after the
 * number of seconds given as options (default 1), writes through a null
 * pointer. HotSpot's signal handler then writes hs_err_pid<pid>.log and
 * the JVM dies: the crash a deployment agent must remember. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static int delay = 1;

static void *crash(void *arg) {
	(void)arg;
	sleep(delay);
	*(volatile int *)0 = 1;
	return NULL;
}

int Agent_OnAttach(void *vm, char *options, void *reserved) {
	(void)vm; (void)reserved;
	if (options && *options) delay = atoi(options);
	pthread_t t;
	pthread_create(&t, NULL, crash, NULL);
	pthread_detach(t);
	return 0;
}
