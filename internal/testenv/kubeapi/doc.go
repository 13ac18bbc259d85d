// Package kubeapi gives tests a real Kubernetes API server: the one a
// developer or CI started (scripts/kube-apiserver.sh start DIR), named by
// $SAFEATTACH_KUBE_APISERVER=DIR (its admin kubeconfig is
// DIR/run/kubeconfig). Without the variable a test skips with one line,
// as the tests of the real async-profiler do without
// $ASYNC_PROFILER_HOME.
//
// The server has no controllers and no kubelet: a test makes its own
// namespace and default ServiceAccount, and gives its pods a status
// (RunningPod) as a kubelet would.
package kubeapi
