/* A shared library with no Agent_OnAttach: not a JVMTI agent at all. */
int not_an_agent(void) { return 7; }
