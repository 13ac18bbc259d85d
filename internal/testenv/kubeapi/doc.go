// Package kubeapi gives tests a real Kubernetes API server: the one make
// test starts for its run (scripts/kube-apiserver.sh run, from binaries
// built once into .cache/kube-apiserver), named by
// $SAFEATTACH_KUBE_APISERVER=DIR (its admin kubeconfig is
// DIR/run/kubeconfig). A go test run outside make without the variable
// skips those tests with one line; in CI (CI=true) they fail instead
// (testenv.Missing): CI runs make test, which always provides one.
//
// The server has no controllers and no kubelet: a test makes its own
// namespace and default ServiceAccount, and gives its pods a status
// (RunningPod) as a kubelet would.
package kubeapi
