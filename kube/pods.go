package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/safeattach/safeattach/internal/safefile"
)

// Pod is the part of a Kubernetes Pod object the agent uses.
type Pod struct {
	Namespace string
	Name      string
	UID       string
	Node      string
	Phase     string
	// Annotations holds the pod's annotations under AnnotationPrefix
	// (the only ones read), each value at most maxAnnotationValue bytes:
	// a pod list's other annotations can be megabytes per pod, and are
	// skipped as they are decoded.
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

// maxPodList bounds a pod list as read: a node runs at most a few hundred
// pods, and Kubernetes caps each object's annotations at 256 KiB, so a
// legal list can be tens of MiB. It is decoded as it is read, one pod at
// a time, keeping only what is used: memory follows the pods kept, not
// the bytes read.
const maxPodList = 256 << 20

// AnnotationPrefix is the annotations' namespace the agent reads.
const AnnotationPrefix = "profiles.safeattach.io/"

// maxAnnotationValue caps a kept annotation value; a longer one is kept
// cut, which no validator downstream accepts.
const maxAnnotationValue = 1024

// annotations decodes a JSON object of annotations, keeping those under
// AnnotationPrefix.
type annotations map[string]string

func (a *annotations) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("annotations: not an object")
	}
	*a = annotations{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string)
		if !strings.HasPrefix(key, AnnotationPrefix) {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return err
			}
			continue
		}
		var v string
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("annotation %s: %w", key, err)
		}
		if len(v) > maxAnnotationValue {
			v = v[:maxAnnotationValue]
		}
		(*a)[key] = v
	}
	return nil
}

// podObject is the wire form of a v1 Pod: the part of it that is used.
type podObject struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Namespace   string      `json:"namespace"`
		Name        string      `json:"name"`
		UID         string      `json:"uid"`
		Annotations annotations `json:"annotations"`
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
		Annotations: o.Metadata.Annotations,
	}
	for _, c := range o.Status.ContainerStatuses {
		p.declared = append(p.declared, c.Name)
		if c.ContainerID != "" && c.State.Running != nil {
			p.Containers = append(p.Containers, Container{Name: c.Name, ID: c.ContainerID})
		}
	}
	return p
}

// DecodePodList decodes a v1 PodList as it is read from r, one item at a
// time (at most maxPodList bytes): what is kept of each pod is what Pod
// holds, whatever else the list carries.
func DecodePodList(r io.Reader) ([]Pod, error) {
	lr := &io.LimitedReader{R: r, N: maxPodList + 1}
	dec := json.NewDecoder(lr)
	fail := func(err error) ([]Pod, error) {
		if lr.N <= 0 {
			return nil, fmt.Errorf("pod list: larger than %d bytes", maxPodList)
		}
		return nil, fmt.Errorf("pod list: %w", err)
	}
	if t, err := dec.Token(); err != nil {
		return fail(err)
	} else if t != json.Delim('{') {
		return fail(errors.New("not a JSON object"))
	}
	var pods []Pod
	kind := ""
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fail(err)
		}
		switch t {
		case "kind":
			if err := dec.Decode(&kind); err != nil {
				return fail(err)
			}
		case "items":
			if t, err := dec.Token(); err != nil {
				return fail(err)
			} else if t == nil {
				continue // "items": null
			} else if t != json.Delim('[') {
				return fail(errors.New("items: not an array"))
			}
			for dec.More() {
				var o podObject
				if err := dec.Decode(&o); err != nil {
					return fail(err)
				}
				pods = append(pods, o.pod())
			}
			if _, err := dec.Token(); err != nil {
				return fail(err)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return fail(err)
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return fail(err)
	}
	if kind != "" && kind != "PodList" && kind != "List" {
		return nil, fmt.Errorf("pod list: kind %q, want PodList", kind)
	}
	if pods == nil {
		pods = []Pod{}
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
// an API server, and for tests. The file is opened as safefile opens any
// file (regular, size-capped, under ctx) and decoded as it is read.
type FilePods struct{ Path string }

// Pods implements PodSource.
func (f FilePods) Pods(ctx context.Context) ([]Pod, error) {
	path, err := filepath.Abs(f.Path)
	if err != nil {
		return nil, err
	}
	h, err := safefile.OpenIn(ctx, "/", path, maxPodList, safefile.Accept{FollowLast: true})
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return DecodePodList(h.Reader(maxPodList))
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
	resp, err := a.do(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return nil, fmt.Errorf("list pods: API answered %d: %s", resp.StatusCode, msg)
	}
	// Decoded as it arrives: a node's list can be tens of MiB of
	// annotations, of which a few bytes are kept.
	return DecodePodList(resp.Body)
}
