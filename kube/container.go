package kube

import (
	"errors"
	"fmt"
	"strings"

	"github.com/safeattach/safeattach/target"
)

// ErrOtherNode: the pod runs on another node; safeattach must run there.
var ErrOtherNode = errors.New("the pod runs on another node")

// ContainerID picks the container of pod to attach to: the one named, or
// the only one. It checks that the pod runs on node (when node is set) and
// that the container is running, and returns its runtime ID.
func (p Pod) ContainerID(container, node string) (string, error) {
	name := p.Namespace + "/" + p.Name
	if node != "" && p.Node != "" && !strings.EqualFold(p.Node, node) {
		return "", fmt.Errorf("pod %s runs on node %s, this is %s: run safeattach there (%w)", name, p.Node, node, ErrOtherNode)
	}
	if p.Phase != "Running" {
		return "", fmt.Errorf("pod %s is %s, not Running", name, orUnknown(p.Phase))
	}
	if container == "" {
		if len(p.Containers) == 1 && len(p.Declared) <= 1 {
			return target.NormalizeContainerID(p.Containers[0].ID), nil
		}
		return "", fmt.Errorf("pod %s has containers %s: name one (pod:%s/CONTAINER)", name, strings.Join(p.containerNames(), ", "), name)
	}
	for _, c := range p.Containers {
		if c.Name == container {
			return target.NormalizeContainerID(c.ID), nil
		}
	}
	for _, d := range p.Declared {
		if d == container {
			return "", fmt.Errorf("pod %s: container %s is not running", name, container)
		}
	}
	return "", fmt.Errorf("pod %s has no container %s (it has %s)", name, container, strings.Join(p.containerNames(), ", "))
}

func (p Pod) containerNames() []string {
	if len(p.Declared) > 0 {
		return p.Declared
	}
	var out []string
	for _, c := range p.Containers {
		out = append(out, c.Name)
	}
	return out
}

func orUnknown(s string) string {
	if s == "" {
		return "in an unknown phase"
	}
	return s
}
