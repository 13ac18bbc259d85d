package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os/exec"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/companion"
	"github.com/safeattach/safeattach/preflight"
	"github.com/safeattach/safeattach/target"
)

func newInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect [--json] PID",
		Short: "Describe a process from the outside, without touching it (no judgement)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := parsePID(args[0])
			if err != nil {
				return err
			}
			r, err := preflight.Inspect(cmd.Context(), pid, preflight.Options{})
			if err != nil {
				if asJSON {
					return jsonFailure(cmd.OutOrStdout(), "inspect", pid, err)
				}
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), struct {
					attach.Envelope
					*preflight.Report
				}{newEnvelope("inspect", nil), r})
			}
			printReport(cmd.OutOrStdout(), r)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// parsePID reads the target argument every command takes, with
// target.Parse and target.Resolve; pod:NAMESPACE/NAME goes through
// safeattach-kube.
func parsePID(s string) (int, error) {
	spec, err := target.Parse(s)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultInspectTimeout)
	defer cancel()
	return target.Resolve(ctx, spec, target.Options{}, podContainer)
}

// podContainer is target.PodLookup through safeattach-kube.
func podContainer(_ context.Context, namespace, pod, container string) (string, error) {
	ref := namespace + "/" + pod
	if container != "" {
		ref += "/" + container
	}
	return containerOfPod(ref)
}

// containerOfPod resolves NAMESPACE/NAME[/CONTAINER] to the container's
// runtime ID with safeattach-kube (beside this binary, else on PATH),
// which asks the Kubernetes API and checks that the pod runs on this node.
// It is a separate binary to keep net/http and crypto/tls out of every
// other call's start-up.
func containerOfPod(ref string) (string, error) {
	helper, err := companion.Find("safeattach-kube", "pod: targets")
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultInspectTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, helper, "container-id", ref)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return "", errors.New(msg)
		}
		return "", fmt.Errorf("pod:%s: %v", ref, err)
	}
	return strings.TrimSpace(stdout.String()), nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// printReport is the human summary: one line per area, the evidence
// indented under it.
func printReport(w io.Writer, r *preflight.Report) {
	p := r.Process
	fmt.Fprintf(w, "pid %d (%s)  state %s  uid %d gid %d  threads %d", r.PID, p.Name, p.State, p.UID.Effective, p.GID.Effective, p.Threads)
	if !p.SamePIDNamespace {
		fmt.Fprintf(w, "  ns-pid %d", p.NSPid)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "signals    SIGQUIT caught=%s ignored=%s  SIGPROF caught=%s  SIGVTALRM caught=%s\n",
		yesNo(p.Signals.SIGQUIT.Caught), yesNo(p.Signals.SIGQUIT.Ignored), yesNo(p.Signals.SIGPROF.Caught), yesNo(p.Signals.SIGVTALRM.Caught))
	if !p.SameMountNamespace {
		fmt.Fprintf(w, "container  own mount namespace, root %s\n", p.Root)
	}
	j := r.JVM
	switch j.Kind {
	case preflight.JVMNone:
		fmt.Fprintln(w, "jvm        none (no libjvm.so or libj9vm mapped)")
	default:
		fmt.Fprintf(w, "jvm        %s %s  (%s)\n", j.Kind, orUnknown(j.Version), j.Home)
		if j.MainClass != "" {
			fmt.Fprintf(w, "           main %s\n", j.MainClass)
		}
		for _, name := range sortedKeys(j.Flags) {
			f := j.Flags[name]
			fmt.Fprintf(w, "           flag %s=%s (from %s)\n", name, f.Value, f.Source)
		}
		s := j.AttachSocket
		if s.Exists {
			fmt.Fprintf(w, "           attach socket %s exists (socket=%s uid=%d mode=%04o)\n", s.Path, yesNo(s.IsSocket), s.UID, s.Mode)
		} else {
			fmt.Fprintf(w, "           attach socket %s not yet created\n", s.Path)
		}
	}
	je := r.Jemalloc
	if je.Present {
		fmt.Fprintf(w, "jemalloc   %s %s via %s, prof built=%s, unwinder %s, heap profiling %s\n", orUnknown(je.Version), je.Path, je.Via, je.ProfBuilt, orUnknown(je.Unwinder), je.Prof.State)
		fmt.Fprintf(w, "           %s\n", je.Prof.Reason)
		for _, s := range je.Prof.Sources {
			switch {
			case s.Error != "":
				fmt.Fprintf(w, "           source %s: unreadable: %s\n", s.Name, s.Error)
			case s.Set:
				fmt.Fprintf(w, "           source %s = %q\n", s.Name, s.Value)
			}
		}
		printEvidence(w, je.Evidence)
		for _, d := range je.Dumps {
			fmt.Fprintf(w, "           dump %s\n", d)
		}
	} else {
		fmt.Fprintln(w, "jemalloc   not loaded process-wide")
	}
	t := r.Tcmalloc
	if t.Present {
		fmt.Fprintf(w, "tcmalloc   gperftools %s %s (%s) via %s, heap profiler %s, cpu profiler %s, unwinder %s\n", orUnknown(t.Version), t.Flavor, t.Path, t.Via, t.HeapProfiler, t.CPUProfiler, orUnknown(t.Unwinder))
		for _, b := range t.HeapProfilerBy {
			fmt.Fprintf(w, "           heap profiler on by %s\n", b)
		}
		printEvidence(w, t.Evidence)
	} else {
		fmt.Fprintln(w, "tcmalloc   not loaded")
	}
	u := r.Libunwind
	if u.Present {
		fmt.Fprintf(w, "libunwind  %s %s (by %s), preloaded=%s\n", orUnknown(u.Version), u.Path, orUnknown(u.VersionMethod), yesNo(u.Preloaded))
	} else {
		fmt.Fprintln(w, "libunwind  not loaded")
	}
	if len(r.Profilers) == 0 {
		fmt.Fprintln(w, "profilers  none loaded")
	}
	for _, l := range r.Profilers {
		fmt.Fprintf(w, "profilers  %s %s at %s\n", l.Kind, orUnknown(l.Version), l.Path)
	}
	fmt.Fprintf(w, "mapped     %d executable ELF files\n", r.MappedELFs)
	for _, u := range r.Unknowns {
		fmt.Fprintf(w, "unknown    %s: %s\n", u.Fact, u.Reason)
	}
}

func printEvidence(w io.Writer, ev []string) {
	for _, e := range ev {
		fmt.Fprintf(w, "           - %s\n", e)
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
