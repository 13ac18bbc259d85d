package main

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/preflight"
	"github.com/safeattach/safeattach/target"
)

// scanEntry is one JVM in `scan --json`.
type scanEntry struct {
	PID       int               `json:"pid"`
	NSPid     int               `json:"ns_pid"`
	User      string            `json:"user"`
	Kind      preflight.JVMKind `json:"kind"`
	Version   string            `json:"version,omitempty"`
	Main      string            `json:"main,omitempty"`
	Container bool              `json:"container"`
	// ContainerID and PodUID come from the JVM's cgroup (package target).
	ContainerID string   `json:"container_id,omitempty"`
	PodUID      string   `json:"pod_uid,omitempty"`
	Verdict     string   `json:"verdict"` // allowed, warn, refused
	Rules       []string `json:"rules,omitempty"`
}

type scanOutput struct {
	attach.Envelope
	Agent      *preflight.Agent        `json:"agent"`
	JVMs       []scanEntry             `json:"jvms"`
	Processes  int                     `json:"processes"`
	NotJVM     int                     `json:"not_jvm"`
	Unreadable []preflight.ScanFailure `json:"unreadable,omitempty"`
}

func newScanCmd() *cobra.Command {
	var (
		agentPath string
		asJSON    bool
		pf        policyFlags
	)
	cmd := &cobra.Command{
		Use:   "scan [--agent PATH] [--json]",
		Short: "List every JVM on this host (and in its containers) with the verdict for attaching the agent",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkTimeout("--timeout", pf.timeout); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), pf.timeout)
			defer cancel()
			policy, err := pf.options().Policy(ctx)
			if err != nil {
				return inspectError(err)
			}
			agent, err := attach.FindAgent(ctx, agentPath)
			if err != nil {
				return inspectError(err)
			}
			res, err := preflight.Scan(ctx, preflight.Options{})
			if err != nil {
				return inspectError(err)
			}
			out := scanOutput{Agent: agent, Processes: res.Processes, NotJVM: res.NotJVM, Unreadable: res.Unreadable, JVMs: []scanEntry{}}
			for _, r := range res.JVMs {
				out.JVMs = append(out.JVMs, summarise(r, conflicts.Evaluate(r, agent, policy)))
			}
			if asJSON {
				out.Envelope = newEnvelope("scan", nil)
				return writeJSON(cmd.OutOrStdout(), out)
			}
			printScan(cmd, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&agentPath, "agent", "", "the agent to judge (default: the installed async-profiler, else the worst plausible agent)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.Flags().DurationVar(&pf.timeout, "timeout", defaultScanTimeout, "deadline for the whole scan")
	pf.register(cmd)
	return cmd
}

func summarise(r *preflight.Report, v conflicts.Verdict) scanEntry {
	e := scanEntry{
		PID: r.PID, NSPid: r.Process.NSPid, User: userName(r.Process.UID.Effective),
		Kind: r.JVM.Kind, Version: r.JVM.Version, Main: r.JVM.MainClass,
		Container: !r.Process.SameMountNamespace, Verdict: "allowed",
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", r.PID)); err == nil && len(data) < 64<<10 {
		loc := target.ParseCgroup(string(data))
		e.ContainerID, e.PodUID = loc.ContainerID, loc.PodUID
	}
	for _, f := range v.Findings {
		switch f.Severity {
		case conflicts.Block:
			e.Verdict = "refused"
			e.Rules = append(e.Rules, f.Rule)
		case conflicts.Warn:
			if e.Verdict == "allowed" {
				e.Verdict = "warn"
			}
			e.Rules = append(e.Rules, f.Rule)
		}
	}
	return e
}

var userCache = map[uint32]string{}

func userName(uid uint32) string {
	if n, ok := userCache[uid]; ok {
		return n
	}
	n := strconv.Itoa(int(uid))
	if u, err := user.LookupId(n); err == nil {
		n = u.Username
	}
	userCache[uid] = n
	return n
}

func printScan(cmd *cobra.Command, out scanOutput) {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
	agent := "assumed worst-case agent (none given or installed)"
	if !out.Agent.Assumed {
		agent = out.Agent.Path
		if out.Agent.Version != "" {
			agent = fmt.Sprintf("%s %s (%s)", out.Agent.Kind, out.Agent.Version, out.Agent.Path)
		}
	}
	fmt.Fprintf(cmd.OutOrStdout(), "agent: %s\n", agent)
	fmt.Fprintln(w, "PID\tNS-PID\tCONTAINER\tPOD\tUSER\tJVM\tMAIN\tVERDICT\tRULES")
	for _, e := range out.JVMs {
		ns := "-"
		if e.Container {
			ns = strconv.Itoa(e.NSPid)
		}
		container, pod := "-", "-"
		if e.ContainerID != "" {
			container = e.ContainerID[:12]
		}
		if e.PodUID != "" {
			pod = e.PodUID
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s %s\t%s\t%s\t%s\n", e.PID, ns, container, pod, e.User, e.Kind, e.Version, trim(e.Main, 40), e.Verdict, strings.Join(e.Rules, ","))
	}
	w.Flush()
	fmt.Fprintf(cmd.OutOrStdout(), "%d JVMs among %d processes; %d not JVMs; %d unreadable\n", len(out.JVMs), out.Processes, out.NotJVM, len(out.Unreadable))
	for _, u := range out.Unreadable {
		if u.JVM {
			fmt.Fprintf(cmd.OutOrStdout(), "JVM %d (it has an hsperfdata file) could not be inspected: %s\n", u.PID, u.Reason)
		}
	}
}

func trim(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n+1:]
}
