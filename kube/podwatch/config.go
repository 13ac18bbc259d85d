package podwatch

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config loads the client configuration as kubectl does: the file at
// kubeconfig if given, else the files $KUBECONFIG lists (merged), else
// ~/.kube/config; with none of them, the pod's service account
// (in-cluster). context picks a context other than the current one.
func Config(kubeconfig, context string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: context}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, fmt.Errorf("no Kubernetes configuration: not in a pod (KUBERNETES_SERVICE_HOST unset) and no kubeconfig ($KUBECONFIG, ~/.kube/config, --kubeconfig)")
		}
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "safeattach"
	return cfg, nil
}
