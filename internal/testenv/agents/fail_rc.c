/* A JVMTI test agent whose Agent_OnAttach fails with return code 42. */
int Agent_OnAttach(void *vm, char *options, void *reserved) {
	(void)vm; (void)options; (void)reserved;
	return 42;
}
