// Command kubectl-safeattach is the kubectl plugin of safeattach's
// on-demand profiling API (package fleet's OnDemandHandler, served by
// each node's safeattach-daemon):
//
//	kubectl safeattach profile [-n NAMESPACE] POD [-c CONTAINER] [-e EVENT] [-d 10s] [-o FORMAT] [-f FILE] [--direct https://NODE:PORT] [--agent-ca FILE]
//	kubectl safeattach check   [-n NAMESPACE] POD [-c CONTAINER] [-e EVENT] [--direct https://NODE:PORT] [--agent-ca FILE]
//	kubectl safeattach start   [-n NAMESPACE] POD [-c CONTAINER] [-e EVENT] [-o FORMAT] [--discard-after 5m]
//	kubectl safeattach status  [-n NAMESPACE] POD [-c CONTAINER]
//	kubectl safeattach stop    [-n NAMESPACE] POD [-c CONTAINER] [-f FILE]
//	kubectl safeattach inspect [-n NAMESPACE] POD [-c CONTAINER] [--json]
//
// asks the agent of the pod's node for a profile of the pod's JVM (check:
// for the verdict a profile would meet, each finding with its remedy,
// nothing sent to the JVM; exit 0 allowed, 2 refused; start: a profile
// that runs until stop writes it, or until --discard-after, when the
// agent discards it; status: who runs what in the pod; inspect: what the agent sees of
// the JVM from the outside), as the
// user of the kubeconfig (loaded as kubectl loads it: $KUBECONFIG,
// --kubeconfig, --context, -n and the context's namespace): the agent
// authenticates the user's bearer token with the API server and lets it
// profile the pod when the user may create profiles.safeattach.io named
// as the pod in its namespace (get, for status and inspect). Where the
// rules refuse every async-profiler build the node has, --fallback jfr
// (or the pod's annotation, or the node's setting) profiles with the
// JVM's Flight Recorder instead, and the plugin says so on stderr. The token is the one client-go presents
// to the API server (a token, a token file, or an exec credential
// plugin), or its client certificate, which the agent verifies against
// the cluster's client CA.
//
// The profile is written to FILE (a temporary file in its directory,
// made before the agent is asked and renamed once complete) or to
// stdout. A refusal or failure prints the agent's message (for a
// refusal by the rules, each finding with its remedy) on stderr and
// exits with its exit_code (2 refused, 3 failed, 4 timed out); 401 and
// 403 exit 1 with the agent's message, which names the missing
// permission. --json prints the agent's JSON answers on stdout too.
//
// The agent is reached through the API server: the plugin reads the
// pod's node, lists the agent pods on it (--agent-namespace,
// --agent-selector) and port-forwards a loopback port to the agent pod's
// on-demand port, as kubectl port-forward does (WebSockets, SPDY where
// the upgrade is refused). Or directly, with --direct and its base URL.
//
// It is a binary of its own so that safeattach itself links no
// client-go.
package main
