package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/safeattach/safeattach/internal/printable"
)

func newCheckCmd(stdout io.Writer, config func() clientcmd.ClientConfig) *cobra.Command {
	var o profileOptions
	cmd := &cobra.Command{
		Use:   "check POD [-c CONTAINER] [-e EVENT] [--direct https://NODE:PORT]",
		Short: "Judge whether the JVM of a pod's container may be profiled, sending it nothing",
		Long: `Ask the agent of the pod's node to judge the pod's JVM as a profile would
(the same permission, the same agent and event, the same rules), and print
the verdict: each finding with its remedy. Nothing is sent to the JVM.

A judgement reads the node's processes, so it counts against the agent's
caps on concurrent on-demand requests, per node and per user (a started
profile of yours holds your slot): past them the agent answers 429 and
the plugin says which cap, exit 2.

Exit status: 0 allowed (warnings included), 2 refused (by the rules, or
past the caps: try again later); 1 unauthenticated (401), forbidden
(403) or a usage or connection error; 3 or 4 when the agent could not
judge (a failure, a timeout).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.check(cmd.Context(), config(), args[0], stdout, cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.container, "container", "c", "", "the pod's container (needed when it runs more than one)")
	f.StringVarP(&o.event, "event", "e", "cpu", "async-profiler event a profile would use: cpu, itimer, wall, alloc, lock, ...")
	o.fallbackFlag(cmd)
	o.connectionFlags(cmd)
	return cmd
}

// verdict is what check prints of the agent's JSON result.
type verdict struct {
	Outcome  string `json:"outcome"`
	ExitCode int    `json:"exit_code"`
	Error    string `json:"error"`
	PID      int    `json:"pid"`
	// Profile says which engine a profile would use when not
	// async-profiler.
	Profile *struct {
		Engine       string   `json:"engine"`
		FallbackFrom []string `json:"fallback_from"`
	} `json:"profile"`
	Verdict *struct {
		Allowed  bool `json:"allowed"`
		Findings []struct {
			Rule     string `json:"rule"`
			Severity string `json:"severity"`
			Message  string `json:"message"`
			Remedy   string `json:"remedy"`
		} `json:"findings"`
	} `json:"verdict"`
}

func (o *profileOptions) check(ctx context.Context, cc clientcmd.ClientConfig, pod string, stdout, stderr io.Writer) error {
	if err := o.checkFallback(); err != nil {
		return err
	}
	q := url.Values{"event": {o.event}}
	if o.fallback != "" {
		q.Set("fallback", o.fallback)
	}
	var v verdict
	if err := o.askJSON(ctx, cc, pod, http.MethodPost, "check", q, stderr, &v); err != nil {
		return err
	}
	if v.Verdict == nil {
		return &exitError{3, "the agent's answer is not a verdict"}
	}
	if o.json {
		if !v.Verdict.Allowed {
			return &exitError{2, ""}
		}
		return nil
	}
	namespace, _, err := cc.Namespace()
	if err != nil {
		return err
	}
	// The agent's words are the target's in part (paths, versions):
	// printed escaped.
	state := "ALLOWED"
	if !v.Verdict.Allowed {
		state = "REFUSED"
	}
	fmt.Fprintf(stdout, "%s  %s/%s (pid %d on its node)\n", state, namespace, pod, v.PID)
	if v.Profile != nil && v.Profile.Engine != "" {
		fmt.Fprintf(stdout, "  profiled by %s: the rules refuse async-profiler (%s)\n", printable.Line(engineName(v.Profile.Engine)), printable.Line(strings.Join(v.Profile.FallbackFrom, ", ")))
	}
	v.printFindings(stdout)
	if !v.Verdict.Allowed {
		return &exitError{2, "refused by " + strings.Join(v.causes(), ", ")}
	}
	return nil
}

// printFindings prints each finding but the informational ones, with
// its remedy.
func (v *verdict) printFindings(w io.Writer) {
	if v.Verdict == nil {
		return
	}
	for _, f := range v.Verdict.Findings {
		if f.Severity == "info" {
			continue
		}
		// One line each, escaped: a message the target influenced
		// cannot forge a line of its own ("ALLOWED …").
		fmt.Fprintf(w, "\n[%s] %s\n  %s\n", printable.Line(f.Severity), printable.Line(f.Rule), printable.Line(f.Message))
		if f.Remedy != "" {
			fmt.Fprintf(w, "  remedy: %s\n", printable.Line(f.Remedy))
		}
	}
}

// causes are the blocking findings' rules, escaped.
func (v *verdict) causes() []string {
	var causes []string
	for _, f := range v.Verdict.Findings {
		if f.Severity == "block" {
			causes = append(causes, printable.Line(f.Rule))
		}
	}
	return causes
}
