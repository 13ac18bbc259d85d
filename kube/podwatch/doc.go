// Package podwatch speaks to the Kubernetes API with client-go: it loads
// the client configuration as kubectl does (merged $KUBECONFIG lists,
// contexts, proxy-url, tls-server-name, exec credential plugins; in a
// pod, its service account), watches one node's pods through an
// informer, and looks one pod up.
//
// The watch is one LIST then a WATCH, filtered by spec.nodeName on the
// server, with bookmarks and a relist when the server answers 410 Gone
// (client-go's reflector); where the server supports it the first list
// is itself streamed as watch events (WatchListClient, on by default in
// client-go 0.35+). Every pod is cut down to what the agent reads before
// it is cached (Slim): its safeattach annotations, phase and container
// statuses. So a node's pods cost the agent what kube.Pod holds, whatever
// else they carry (annotations of 256 KiB, managedFields).
//
// Only the binaries that talk to an API server link this package
// (safeattach-daemon, safeattach-kube); safeattach itself does not.
package podwatch
