package target

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/safeattach/safeattach/internal/proc"
)

// Candidate is one host process and where it runs: what a target name
// may resolve to.
type Candidate struct {
	PID int `json:"pid"`
	Location
	// JVM is "hotspot" or "openj9" when the process maps a Java VM.
	JVM string `json:"jvm,omitempty"`
	// Cmdline is the first argument, for messages.
	Command string `json:"command,omitempty"`
}

// Options choose the procfs read ("" is /proc).
type Options struct{ ProcRoot string }

// ErrNotFound: nothing runs in the container or pod named.
var ErrNotFound = errors.New("no process found")

// All lists every process with its location.
func All(opts Options) ([]Candidate, error) {
	fsys := proc.NewFS(opts.ProcRoot)
	pids, err := fsys.PIDs()
	if err != nil {
		return nil, err
	}
	var out []Candidate
	for _, pid := range pids {
		p := fsys.Proc(pid)
		data, err := p.Cgroup()
		if err != nil {
			continue // gone, not ours to read, or over the cap
		}
		pr := Candidate{PID: pid, Location: ParseCgroup(string(data))}
		if args, err := p.Cmdline(); err == nil && len(args) > 0 {
			pr.Command = filepath.Base(args[0])
		}
		out = append(out, pr)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].PID < out[b].PID })
	return out, nil
}

// ByContainer returns the processes of the container whose ID is id (a
// full ID, a runtime URI or a prefix of at least 12 hex digits). A prefix
// that names two containers is an error listing them.
func ByContainer(id string, opts Options) ([]Candidate, error) {
	all, err := All(opts)
	if err != nil {
		return nil, err
	}
	return InContainer(all, id, opts)
}

// InContainer is ByContainer over a list from All: a caller resolving
// many containers (the node agent, every sync) reads /proc once.
func InContainer(all []Candidate, id string, opts Options) ([]Candidate, error) {
	want := NormalizeContainerID(id)
	if len(want) < 12 {
		return nil, fmt.Errorf("container ID %q: give at least 12 hex digits", id)
	}
	var out []Candidate
	ids := map[string]bool{}
	for _, p := range all {
		if p.ContainerID != "" && strings.HasPrefix(p.ContainerID, want) {
			out = append(out, p)
			ids[p.ContainerID] = true
		}
	}
	if len(ids) > 1 {
		var list []string
		for k := range ids {
			list = append(list, k)
		}
		sort.Strings(list)
		return nil, fmt.Errorf("container ID prefix %q is ambiguous: %s", id, strings.Join(list, ", "))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("container %s: %w on this host", id, ErrNotFound)
	}
	return withJVMs(out, opts), nil
}

// ByPodUID returns the processes of every container of the pod.
func ByPodUID(uid string, opts Options) ([]Candidate, error) {
	want := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(uid), "_", "-"))
	all, err := All(opts)
	if err != nil {
		return nil, err
	}
	var out []Candidate
	for _, p := range all {
		if p.PodUID == want {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("pod %s: %w on this host", uid, ErrNotFound)
	}
	return withJVMs(out, opts), nil
}

func withJVMs(ps []Candidate, opts Options) []Candidate {
	fsys := proc.NewFS(opts.ProcRoot)
	for i := range ps {
		if kind, _, err := fsys.Proc(ps[i].PID).JVMKind(); err == nil {
			ps[i].JVM = kind
		}
	}
	return ps
}

// PickJVM returns the one JVM among ps (a shell wrapper that started it is
// skipped: only processes mapping a Java VM count). None, or several, is
// an error that lists what was found.
func PickJVM(ps []Candidate) (Candidate, error) {
	var jvms []Candidate
	for _, p := range ps {
		if p.JVM != "" {
			jvms = append(jvms, p)
		}
	}
	switch len(jvms) {
	case 1:
		return jvms[0], nil
	case 0:
		var seen []string
		for _, p := range ps {
			seen = append(seen, fmt.Sprintf("%d (%s)", p.PID, p.Command))
		}
		return Candidate{}, fmt.Errorf("no JVM among %s", strings.Join(seen, ", "))
	}
	var list []string
	for _, p := range jvms {
		list = append(list, fmt.Sprintf("%d (%s, container %.12s)", p.PID, p.Command, p.ContainerID))
	}
	return Candidate{}, fmt.Errorf("%d JVMs: %s; name one by pid", len(jvms), strings.Join(list, ", "))
}
