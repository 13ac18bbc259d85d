package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	//lint:ignore SA1019 client-go 0.37's portforward and spdy still take and return this package's Dialer
	"k8s.io/apimachinery/pkg/util/httpstream"
)

// onDemandPort is the name of the agent container's on-demand port in the
// chart's DaemonSet.
const onDemandPort = "on-demand"

// agentTunnel is a port-forward to the agent pod of a target pod's node,
// through the API server and that node's kubelet, as kubectl
// port-forward makes one: the user needs get on the target pod, list on
// pods and get on daemonsets in the agent's namespace and get
// (WebSockets) and create (SPDY) on pods/portforward there.
type agentTunnel struct {
	base  *url.URL
	node  string
	agent string
	stop  chan struct{}
	done  chan error
}

// openTunnel finds the node of pod in namespace, that node's agent pod
// (agentNS, selector) and forwards a loopback port to its on-demand port.
func openTunnel(ctx context.Context, cfg *rest.Config, namespace, pod, agentNS, selector string, errOut io.Writer) (*agentTunnel, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	target, err := cs.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
	if apierrors.IsForbidden(err) {
		return nil, fmt.Errorf("pod %s/%s: %w (a cluster admin lets you with: kubectl -n %s create rolebinding NAME --clusterrole=safeattach-profiler --user=YOU)", namespace, pod, err, namespace)
	}
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", namespace, pod, err)
	}
	node := target.Spec.NodeName
	if node == "" {
		return nil, fmt.Errorf("pod %s/%s is not scheduled to a node yet", namespace, pod)
	}
	agents, err := cs.CoreV1().Pods(agentNS).List(ctx, metav1.ListOptions{LabelSelector: selector, FieldSelector: "spec.nodeName=" + node})
	if apierrors.IsForbidden(err) {
		return nil, fmt.Errorf("the node agent of %s (pods %s in namespace %s): %w (the way to it is a port-forward: a cluster admin lets you with: kubectl -n %s create rolebinding NAME --role=safeattach-portforward --user=YOU; or give --direct https://NODE:PORT)", node, selector, agentNS, err, agentNS)
	}
	if err != nil {
		return nil, fmt.Errorf("the node agent of %s (pods %s in namespace %s): %w", node, selector, agentNS, err)
	}
	agent, port, err := pickAgent(ctx, cs, agents.Items, node, agentNS, selector)
	if err != nil {
		return nil, err
	}
	rt, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	u := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(agentNS).Name(agent.Name).SubResource("portforward").URL()
	var dialer httpstream.Dialer = spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	// As kubectl does: WebSockets first, SPDY where the API server or a
	// proxy in between refuses the upgrade.
	if ws, err := portforward.NewSPDYOverWebsocketDialer(u, cfg); err == nil {
		dialer = portforward.NewFallbackDialer(ws, dialer, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		})
	}
	t := &agentTunnel{node: node, agent: agentNS + "/" + agent.Name, stop: make(chan struct{}), done: make(chan error, 1)}
	ready := make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, t.stop, ready, io.Discard, errOut)
	if err != nil {
		return nil, err
	}
	go func() { t.done <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-t.done:
		return nil, fmt.Errorf("port-forward to the node agent %s: %w", t.agent, err)
	case <-ctx.Done():
		close(t.stop)
		return nil, ctx.Err()
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		t.Close()
		return nil, fmt.Errorf("port-forward to the node agent %s: no local port (%v)", t.agent, err)
	}
	t.base = &url.URL{Scheme: "https", Host: "127.0.0.1:" + strconv.Itoa(int(ports[0].Local))}
	return t, nil
}

// pickAgent is the running, ready agent pod among pods that its
// DaemonSet made, and its on-demand port.
func pickAgent(ctx context.Context, cs kubernetes.Interface, pods []corev1.Pod, node, ns, selector string) (*corev1.Pod, int, error) {
	var refused error
	for i := range pods {
		p := &pods[i]
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil || !ready(p) {
			continue
		}
		if err := ownedByDaemonSet(ctx, cs, p); err != nil {
			refused = err
			continue
		}
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == onDemandPort {
					return p, int(cp.ContainerPort), nil
				}
			}
		}
		return nil, 0, fmt.Errorf("the node agent %s/%s on %s has no %q port: the chart's onDemand.enabled is off (helm upgrade ... --set onDemand.enabled=true)", ns, p.Name, node, onDemandPort)
	}
	if refused != nil {
		return nil, 0, refused
	}
	return nil, 0, fmt.Errorf("no running node agent on node %s (pods %s in namespace %s; --agent-namespace and --agent-selector name others)", node, selector, ns)
}

// ownedByDaemonSet refuses an agent pod that its DaemonSet did not make:
// the user's bearer token goes to it, so a pod that only looks like the
// agent (its label, node and port, made by whoever may create pods in the
// agent's namespace) must not be picked. The pod's controller must be a
// DaemonSet of its namespace (the same UID), and the pod must run that
// DaemonSet's image as its ServiceAccount.
func ownedByDaemonSet(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod) error {
	ref := metav1.GetControllerOf(p)
	if ref == nil || ref.Kind != "DaemonSet" || ref.APIVersion != "apps/v1" {
		return fmt.Errorf("the pod %s/%s looks like the node agent but no DaemonSet controls it: not sending your credentials to it", p.Namespace, p.Name)
	}
	ds, err := cs.AppsV1().DaemonSets(p.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("the node agent's DaemonSet %s/%s: %w", p.Namespace, ref.Name, err)
	}
	tmpl := ds.Spec.Template.Spec
	if ds.UID != ref.UID || p.Spec.ServiceAccountName != tmpl.ServiceAccountName || !sameImages(p.Spec.Containers, tmpl.Containers) {
		return fmt.Errorf("the pod %s/%s claims the DaemonSet %s but is not its pod (UID, ServiceAccount or image differ): not sending your credentials to it", p.Namespace, p.Name, ref.Name)
	}
	return nil
}

func sameImages(a, b []corev1.Container) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].Image != b[i].Image {
			return false
		}
	}
	return true
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Close ends the port-forward and waits for it.
func (t *agentTunnel) Close() {
	close(t.stop)
	<-t.done
}
