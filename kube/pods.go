package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

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
	// ("containerd://<64 hex>"): the pod's containers, its init
	// containers still running (native sidecars: restartPolicy Always),
	// and its ephemeral containers (kubectl debug).
	Containers []Container
	// Declared names every container with a status, running or not.
	Declared []string
}

// Container is one running container.
type Container struct {
	Name string
	ID   string
	// Ephemeral marks a container added by kubectl debug: a tool, not
	// the application, so it is profiled only when asked for by name.
	Ephemeral bool
}

// PodSource lists the pods the agent should look at.
type PodSource interface {
	Pods(ctx context.Context) ([]Pod, error)
}

// ErrNotSynced is a PodSource's answer before it has its first list (a
// watch starting): a state to wait out, not a failure.
var ErrNotSynced = errors.New("not synced with the API server yet")

// Notifier is a PodSource that says when its pods changed (a watch):
// a receive from Changes means "list again". A source without it is
// read on a timer.
type Notifier interface {
	Changes() <-chan struct{}
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

// Annotations keeps, of a pod's annotations, those under AnnotationPrefix,
// each value cut at maxAnnotationValue bytes: what Pod.Annotations holds,
// for a source that has the whole map (an API object).
func Annotations(all map[string]string) map[string]string {
	var out map[string]string
	for k, v := range all {
		if strings.HasPrefix(k, AnnotationPrefix) {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = capAnnotation(v)
		}
	}
	return out
}

func capAnnotation(v string) string { return v[:min(len(v), maxAnnotationValue)] }

// annotations decodes a JSON object of annotations, keeping those under
// AnnotationPrefix (without decoding the others' values).
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
		(*a)[key] = capAnnotation(v)
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
		Phase                      string            `json:"phase"`
		ContainerStatuses          []containerStatus `json:"containerStatuses"`
		InitContainerStatuses      []containerStatus `json:"initContainerStatuses"`
		EphemeralContainerStatuses []containerStatus `json:"ephemeralContainerStatuses"`
	} `json:"status"`
}

type containerStatus struct {
	Name        string `json:"name"`
	ContainerID string `json:"containerID"`
	State       struct {
		Running *struct{} `json:"running"`
	} `json:"state"`
}

// pod keeps only the running containers with an ID: the others have no
// process to profile.
func (o podObject) pod() Pod {
	p := Pod{
		Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, UID: o.Metadata.UID,
		Node: o.Spec.NodeName, Phase: o.Status.Phase,
		Annotations: o.Metadata.Annotations,
	}
	for i, list := range [][]containerStatus{o.Status.ContainerStatuses, o.Status.InitContainerStatuses, o.Status.EphemeralContainerStatuses} {
		for _, c := range list {
			p.AddStatus(c.Name, c.ContainerID, c.State.Running != nil, i == 2)
		}
	}
	return p
}

// AddStatus records one container status: every container is declared,
// a running one with an ID is a Container.
func (p *Pod) AddStatus(name, id string, running, ephemeral bool) {
	p.Declared = append(p.Declared, name)
	if id != "" && running {
		p.Containers = append(p.Containers, Container{Name: name, ID: id, Ephemeral: ephemeral})
	}
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
