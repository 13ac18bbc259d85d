package conflicts

import "github.com/safeattach/safeattach/preflight"

// AssumedAgent stands in for an agent that was not given (check without
// --agent and no async-profiler installation found): the worst plausible
// one, an affected pre-4.0 async-profiler build, so that the
// agent-dependent rules still speak, and say that they assumed.
func AssumedAgent() *preflight.Agent {
	return &preflight.Agent{
		Kind:             preflight.AgentAsyncProfiler,
		Assumed:          true,
		ImportsDlIterate: true,
		Imports:          []string{"dl_iterate_phdr"},
		Evidence:         []string{"no agent given and none installed: assuming the worst plausible agent, an async-profiler build that allocates under the loader lock"},
	}
}
