package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/safeattach/safeattach/internal/safefile"
)

// Pod is the part of a Kubernetes Pod object the agent uses.
type Pod struct {
	Namespace   string
	Name        string
	UID         string
	Node        string
	Phase       string
	Labels      map[string]string
	Annotations map[string]string
	// Containers are the running containers with their runtime IDs
	// ("containerd://<64 hex>").
	Containers []Container
	// declared names every container with a status, running or not.
	declared []string
}

// Container is one container's status.
type Container struct {
	Name string
	ID   string
}

// PodSource lists the pods the agent should look at.
type PodSource interface {
	Pods(ctx context.Context) ([]Pod, error)
}

// maxPodList bounds a pod list: a node runs at most a few hundred pods of
// some kilobytes each.
const maxPodList = 32 << 20

// podObject is the wire form of a v1 Pod: the part of it that is used.
type podObject struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Namespace   string            `json:"namespace"`
		Name        string            `json:"name"`
		UID         string            `json:"uid"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		Phase             string `json:"phase"`
		ContainerStatuses []struct {
			Name        string `json:"name"`
			ContainerID string `json:"containerID"`
			State       struct {
				Running *struct{} `json:"running"`
			} `json:"state"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

// pod keeps only the running containers with an ID: the others have no
// process to profile.
func (o podObject) pod() Pod {
	p := Pod{
		Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, UID: o.Metadata.UID,
		Node: o.Spec.NodeName, Phase: o.Status.Phase,
		Labels: o.Metadata.Labels, Annotations: o.Metadata.Annotations,
	}
	for _, c := range o.Status.ContainerStatuses {
		p.declared = append(p.declared, c.Name)
		if c.ContainerID != "" && c.State.Running != nil {
			p.Containers = append(p.Containers, Container{Name: c.Name, ID: c.ContainerID})
		}
	}
	return p
}

// podList is the wire form of a v1 PodList (kubectl get pods -o json and
// GET /api/v1/pods both produce it).
type podList struct {
	Kind  string      `json:"kind"`
	Items []podObject `json:"items"`
}

// ParsePodList decodes a v1 PodList.
func ParsePodList(data []byte) ([]Pod, error) {
	var l podList
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("pod list: %w", err)
	}
	if l.Kind != "" && l.Kind != "PodList" && l.Kind != "List" {
		return nil, fmt.Errorf("pod list: kind %q, want PodList", l.Kind)
	}
	pods := make([]Pod, 0, len(l.Items))
	for _, it := range l.Items {
		pods = append(pods, it.pod())
	}
	return pods, nil
}

// parsePod decodes one v1 Pod.
func parsePod(data []byte) (Pod, error) {
	var o podObject
	if err := json.Unmarshal(data, &o); err != nil {
		return Pod{}, fmt.Errorf("pod: %w", err)
	}
	if o.Kind != "" && o.Kind != "Pod" {
		return Pod{}, fmt.Errorf("pod: kind %q, want Pod", o.Kind)
	}
	return o.pod(), nil
}

// FilePods reads a PodList from a file on every call: for nodes without
// an API server, and for tests.
type FilePods struct{ Path string }

// Pods implements PodSource.
func (f FilePods) Pods(ctx context.Context) ([]Pod, error) {
	file, err := safefile.Read(ctx, f.Path, maxPodList, safefile.Options{})
	if err != nil {
		return nil, err
	}
	return ParsePodList(file.Data)
}

// APIPods lists the pods scheduled on Node from the Kubernetes API with a
// field selector: one GET per Sync, which is all a node agent needs (a
// watch would save little at a period of seconds and cost a client
// library many times the size of this binary).
type APIPods struct {
	// Server is the API's base URL, Token the bearer token.
	Server string
	Token  string
	// TokenFile, if set, is read for the token at every request: a
	// service account's projected token is rotated by kubelet (hourly by
	// default) and a daemon outlives it.
	TokenFile string
	Node      string
	Client    *http.Client
}

// Service account files every pod gets (Kubernetes "Accessing the API from
// a pod").
const (
	saDir       = "/var/run/secrets/kubernetes.io/serviceaccount"
	maxSAFile   = 1 << 20
	listTimeout = 30 * time.Second
)

// InClusterPods builds an APIPods from the pod's service account and the
// KUBERNETES_SERVICE_HOST/PORT variables.
func InClusterPods(ctx context.Context, node string) (*APIPods, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("not in a cluster: KUBERNETES_SERVICE_HOST/PORT unset (use --pods-file)")
	}
	if _, err := safefile.Read(ctx, saDir+"/token", maxSAFile, safefile.Options{}); err != nil {
		return nil, fmt.Errorf("service account token: %w", err)
	}
	ca, err := safefile.Read(ctx, saDir+"/ca.crt", maxSAFile, safefile.Options{})
	if err != nil {
		return nil, fmt.Errorf("service account CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.Data) {
		return nil, errors.New("service account CA: no certificate in ca.crt")
	}
	client := &http.Client{Timeout: listTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	return &APIPods{Server: "https://" + net.JoinHostPort(host, port), TokenFile: saDir + "/token", Node: node, Client: client}, nil
}

// Pods implements PodSource.
func (a *APIPods) Pods(ctx context.Context) ([]Pod, error) {
	if a.Node == "" {
		return nil, errors.New("list pods: no node name (set NODE_NAME from spec.nodeName)")
	}
	u := a.Server + "/api/v1/pods?fieldSelector=" + url.QueryEscape("spec.nodeName="+a.Node)
	data, status, err := a.get(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("list pods: API answered %d: %.200s", status, data)
	}
	return ParsePodList(data)
}
