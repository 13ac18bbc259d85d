package target

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/safeattach/safeattach/internal/proc"
)

// Kind is the form a target was named in.
type Kind string

// The forms, as the CLI and the daemon take them.
const (
	KindPID       Kind = "pid"       // 4242
	KindContainer Kind = "container" // container:ID (a runtime URI, 64 hex or a prefix of 12+)
	KindPodUID    Kind = "pod-uid"   // pod-uid:UID
	KindPod       Kind = "pod"       // pod:NAMESPACE/NAME[/CONTAINER]
	KindName      Kind = "name"      // jps (the newest JVM), or an application's name as jps shows it
)

// Spec is a parsed target.
type Spec struct {
	Kind Kind
	PID  int
	// ID is the container ID, the pod UID, or the application's name.
	ID string
	// Namespace, Pod and Container name a pod: target.
	Namespace, Pod, Container string
}

func (s Spec) String() string {
	switch s.Kind {
	case KindPID:
		return strconv.Itoa(s.PID)
	case KindPod:
		ref := s.Namespace + "/" + s.Pod
		if s.Container != "" {
			ref += "/" + s.Container
		}
		return "pod:" + ref
	case KindName:
		return s.ID
	}
	return string(s.Kind) + ":" + s.ID
}

// ErrBadSpec: the text names no target.
var ErrBadSpec = errors.New("not a target")

// Parse reads what a user names: a host pid, container:ID, pod-uid:UID,
// pod:NAMESPACE/NAME[/CONTAINER], jps, or an application's name (its main
// class, simple or full, or its jar with or without .jar).
func Parse(s string) (Spec, error) {
	bad := func(why string) (Spec, error) {
		return Spec{}, fmt.Errorf("%q: %w (%s; want a pid, container:ID, pod-uid:UID, pod:NAMESPACE/NAME[/CONTAINER], jps or an application name)", s, ErrBadSpec, why)
	}
	switch {
	case strings.HasPrefix(s, "container:"):
		id := strings.TrimPrefix(s, "container:")
		if id == "" {
			return bad("no container ID")
		}
		return Spec{Kind: KindContainer, ID: id}, nil
	case strings.HasPrefix(s, "pod-uid:"):
		uid := strings.TrimPrefix(s, "pod-uid:")
		if uid == "" {
			return bad("no pod UID")
		}
		return Spec{Kind: KindPodUID, ID: uid}, nil
	case strings.HasPrefix(s, "pod:"):
		parts := strings.Split(strings.TrimPrefix(s, "pod:"), "/")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || len(parts) == 3 && parts[2] == "" {
			return bad("pod: wants NAMESPACE/NAME or NAMESPACE/NAME/CONTAINER")
		}
		sp := Spec{Kind: KindPod, Namespace: parts[0], Pod: parts[1]}
		if len(parts) == 3 {
			sp.Container = parts[2]
		}
		return sp, nil
	}
	if pid, err := strconv.Atoi(s); err == nil {
		if pid <= 0 {
			return bad("not a process id")
		}
		return Spec{Kind: KindPID, PID: pid}, nil
	}
	if s == "" || strings.HasPrefix(s, "-") || strings.ContainsAny(s, " \t\n/") || len(s) > 256 {
		return bad("not a process id")
	}
	return Spec{Kind: KindName, ID: s}, nil
}

// PodLookup resolves a pod's container to its runtime ID (the
// Kubernetes API is a binary of its own: safeattach-kube).
type PodLookup func(ctx context.Context, namespace, pod, container string) (containerID string, err error)

// Resolve finds the host pid of the one JVM spec names. Containers and
// pods are found through /proc/*/cgroup (a wrapper shell is skipped);
// names as jps shows them, from each JVM's command line ("jps" is the
// newest JVM). None, or several, is an error listing what was found.
func Resolve(ctx context.Context, spec Spec, opts Options, pods PodLookup) (int, error) {
	var ps []Candidate
	var err error
	switch spec.Kind {
	case KindPID:
		return spec.PID, nil
	case KindName:
		return byName(ctx, spec.ID, opts)
	case KindContainer:
		ps, err = ByContainer(spec.ID, opts)
	case KindPodUID:
		ps, err = ByPodUID(spec.ID, opts)
	case KindPod:
		if pods == nil {
			return 0, fmt.Errorf("%s: no Kubernetes lookup given", spec)
		}
		var id string
		if id, err = pods(ctx, spec.Namespace, spec.Pod, spec.Container); err == nil {
			ps, err = ByContainer(id, opts)
		}
	default:
		return 0, fmt.Errorf("%w: kind %q", ErrBadSpec, spec.Kind)
	}
	if err != nil {
		return 0, err
	}
	jvm, err := PickJVM(ps)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", spec, err)
	}
	return jvm.PID, nil
}

// byName finds a JVM as asprof does: "jps" is the newest; any other word
// is the application's name, matched against each JVM's main class
// (full or simple name) or jar (with or without .jar).
func byName(ctx context.Context, name string, opts Options) (int, error) {
	fsys := proc.NewFS(opts.ProcRoot)
	pids, err := fsys.PIDs()
	if err != nil {
		return 0, err
	}
	type found struct {
		pid   int
		main  string
		start uint64
	}
	var hits []found
	for _, pid := range pids {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		p := fsys.Proc(pid)
		args, err := p.Cmdline()
		if err != nil || len(args) == 0 {
			continue
		}
		if kind, _, err := p.JVMKind(); err != nil || kind == "" {
			continue
		}
		_, main := proc.JavaMain(args)
		if name != "jps" && !matchesApp(main, name) {
			continue
		}
		st, err := p.Stat()
		if err != nil {
			continue
		}
		hits = append(hits, found{pid, main, st.StartTime})
	}
	switch {
	case len(hits) == 0:
		return 0, fmt.Errorf("no JVM named %q on this host (safeattach scan lists them)", name)
	case len(hits) == 1:
		return hits[0].pid, nil
	case name == "jps":
		newest := hits[0]
		for _, h := range hits {
			if h.start > newest.start {
				newest = h
			}
		}
		return newest.pid, nil
	}
	var list []string
	for _, h := range hits {
		list = append(list, fmt.Sprintf("%d (%s)", h.pid, h.main))
	}
	return 0, fmt.Errorf("%d JVMs named %q: %s; give a pid", len(hits), name, strings.Join(list, ", "))
}

// matchesApp compares a JVM's main class or "-jar path" with a name.
func matchesApp(main, name string) bool {
	if jar, ok := strings.CutPrefix(main, "-jar "); ok {
		base := filepath.Base(jar)
		return base == name || strings.TrimSuffix(base, ".jar") == name
	}
	main = strings.TrimPrefix(main, "-m ")
	if i := strings.LastIndexAny(main, "./"); i >= 0 && main[i+1:] == name {
		return true
	}
	return main == name
}
