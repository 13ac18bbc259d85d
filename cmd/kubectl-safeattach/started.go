package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/safeattach/safeattach/internal/printable"
	"github.com/safeattach/safeattach/internal/reporttext"
	"github.com/safeattach/safeattach/preflight"
)

// startedProfile is a profile the agent started, in its start and
// status answers.
type startedProfile struct {
	Container    string    `json:"container"`
	By           string    `json:"by"`
	Engine       string    `json:"engine"`
	Event        string    `json:"event"`
	Format       string    `json:"format"`
	FallbackFrom []string  `json:"fallback_from"`
	Since        time.Time `json:"since"`
	StopsAt      time.Time `json:"stops_at"`
	Discarded    string    `json:"discarded"`
}

// state is the agent's answer to start and status.
type state struct {
	Started    []startedProfile `json:"started"`
	Discarded  []startedProfile `json:"discarded"`
	Continuous []string         `json:"continuous"`
}

func newStartCmd(stdout io.Writer, config func() clientcmd.ClientConfig) *cobra.Command {
	var o profileOptions
	cmd := &cobra.Command{
		Use:   "start POD [-c CONTAINER] [-e EVENT] [-o FORMAT] [--discard-after 5m]",
		Short: "Start profiling the JVM of a pod's container, until stop",
		Long: `Start profiling the JVM of a pod's container through the agent of the
pod's node, and return: the profile runs until kubectl safeattach stop
(yours, or a teammate's who may create profiles of the pod), which writes
it. A profile no one stopped by --discard-after (default, and at most,
the agent's maximum: 5m unless its operator set another) is stopped by
the agent and discarded: status and stop then say so. It needs create on
profiles.safeattach.io named as the pod, as profile does.

Exit status: 0 started; 1 unauthenticated (401), forbidden (403) or a
usage or connection error; otherwise the agent's exit_code (2 refused,
3 failed, 4 timed out), the reason and remedy on stderr
(--json: the agent's JSON result on stdout too).`,
		Example: `  kubectl safeattach start -n shop orders -o flamegraph --discard-after 5m
  # ... reproduce the slow request ...
  kubectl safeattach stop -n shop orders -f orders.html`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.start(cmd.Context(), config(), args[0], stdout, cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.container, "container", "c", "", "the pod's container (needed when it runs more than one)")
	f.StringVarP(&o.event, "event", "e", "cpu", "async-profiler event: cpu, itimer, wall, alloc, lock, ...")
	f.DurationVar(&o.duration, "discard-after", 0, "the agent stops and discards the profile if no one stopped it by then (default: the agent's maximum, 5m unless its operator set another)")
	f.StringVarP(&o.format, "output", "o", "collapsed", "the format stop writes: collapsed, pprof, jfr or flamegraph")
	o.fallbackFlag(cmd)
	o.connectionFlags(cmd)
	return cmd
}

func (o *profileOptions) start(ctx context.Context, cc clientcmd.ClientConfig, pod string, stdout, stderr io.Writer) error {
	if o.duration < 0 || (o.duration > 0 && o.duration < time.Second) {
		return fmt.Errorf("--discard-after %v: want 1s or more, up to the agent's maximum (5m unless its operator set another)", o.duration)
	}
	if err := checkFormat(o.format); err != nil {
		return err
	}
	if err := o.checkFallback(); err != nil {
		return err
	}
	q := url.Values{"format": {o.format}, "event": {o.event}}
	if o.duration > 0 {
		q.Set("duration", o.duration.String())
	}
	if o.fallback != "" {
		q.Set("fallback", o.fallback)
	}
	var st state
	if err := o.askJSON(ctx, cc, pod, http.MethodPost, "start", q, stderr, &st); err != nil || o.json {
		return err
	}
	if len(st.Started) != 1 {
		return &exitError{3, "the agent's answer names no started profile"}
	}
	s := st.Started[0]
	namespace, _, _ := cc.Namespace()
	fmt.Fprintf(stdout, "started: %s/%s container %s, %s\n", namespace, pod, printable.Line(s.Container), describe(s))
	if s.Engine == "jfr" {
		fmt.Fprintf(stdout, "  by %s: the rules refuse async-profiler (%s)\n", engineName(s.Engine), printable.Line(strings.Join(s.FallbackFrom, ", ")))
	}
	fmt.Fprintf(stdout, "stop it and write the profile with: kubectl safeattach stop -n %s %s -f FILE\n", namespace, pod)
	return nil
}

// describe is one line about a started profile.
func describe(s startedProfile) string {
	return fmt.Sprintf("%s, event %s, format %s, by %s since %s (%s ago); the agent discards it at %s (in %s) unless stopped before",
		printable.Line(engineName(s.Engine)), printable.Line(s.Event), printable.Line(s.Format), printable.Line(s.By),
		s.Since.Local().Format(time.TimeOnly), time.Since(s.Since).Round(time.Second), s.StopsAt.Local().Format(time.TimeOnly),
		max(0, time.Until(s.StopsAt).Round(time.Second)))
}

func newStopCmd(stdout io.Writer, config func() clientcmd.ClientConfig) *cobra.Command {
	var o profileOptions
	cmd := &cobra.Command{
		Use:   "stop POD [-c CONTAINER] [-f FILE]",
		Short: "Stop a profile started with start and write it",
		Long: `Stop the profile started on demand in the pod (kubectl safeattach start),
by you or a teammate, and write it to -f FILE (whole or not at all) or
stdout, in the format the start asked for. It needs create on
profiles.safeattach.io named as the pod.

Exit status: 0 with the profile; 1 unauthenticated (401), forbidden
(403), none started (404) or a usage or connection error; otherwise the
agent's exit_code (3 failed, 4 timed out), the reason and remedy on stderr
(--json: the agent's JSON result on stdout too).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.stop(cmd.Context(), config(), args[0], stdout, cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.container, "container", "c", "", "the container whose profile to stop (needed when more than one runs in the pod)")
	f.StringVarP(&o.file, "file", "f", "", "write the profile to FILE (default, or -, stdout)")
	o.connectionFlags(cmd)
	return cmd
}

func (o *profileOptions) stop(ctx context.Context, cc clientcmd.ClientConfig, pod string, stdout, stderr io.Writer) error {
	if o.file == "-" {
		o.file = ""
	}
	// Reading the profile back from the JVM and writing it is bounded by
	// the agent; this bounds an agent that hangs.
	return o.fetch(ctx, cc, pod, "stop", url.Values{}, 5*time.Minute, stdout, stderr)
}

func newStatusCmd(stdout io.Writer, config func() clientcmd.ClientConfig) *cobra.Command {
	var o profileOptions
	cmd := &cobra.Command{
		Use:   "status POD [-c CONTAINER]",
		Short: "Show the profiles started in a pod, and whether the node agent profiles it continuously",
		Long: `Show the profiles started on demand in the pod (who started each, what it
records, when the agent discards it) and the containers the node agent
profiles continuously. It needs get on profiles.safeattach.io named as
the pod.

Exit status: 0; 1 unauthenticated (401), forbidden (403), a pod not on
a node with an agent (404) or a usage or connection error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.status(cmd.Context(), config(), args[0], stdout, cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVarP(&o.container, "container", "c", "", "only this container")
	o.connectionFlags(cmd)
	return cmd
}

func (o *profileOptions) status(ctx context.Context, cc clientcmd.ClientConfig, pod string, stdout, stderr io.Writer) error {
	var st state
	if err := o.askJSON(ctx, cc, pod, http.MethodGet, "status", url.Values{}, stderr, &st); err != nil || o.json {
		return err
	}
	namespace, _, _ := cc.Namespace()
	if len(st.Started) == 0 {
		fmt.Fprintf(stdout, "%s/%s: no profile started on demand\n", namespace, pod)
	}
	for _, s := range st.Started {
		fmt.Fprintf(stdout, "%s/%s container %s: %s\n", namespace, pod, printable.Line(s.Container), describe(s))
	}
	for _, s := range st.Discarded {
		fmt.Fprintf(stdout, "%s/%s container %s: the profile %s started at %s was discarded at %s (%s)\n", namespace, pod, printable.Line(s.Container),
			printable.Line(s.By), s.Since.Local().Format(time.TimeOnly), s.StopsAt.Local().Format(time.TimeOnly), printable.Line(s.Discarded))
	}
	for _, c := range st.Continuous {
		fmt.Fprintf(stdout, "%s/%s container %s: profiled continuously by the node agent\n", namespace, pod, printable.Line(c))
	}
	return nil
}

func newInspectCmd(stdout io.Writer, config func() clientcmd.ClientConfig) *cobra.Command {
	var o profileOptions
	cmd := &cobra.Command{
		Use:   "inspect POD [-c CONTAINER] [--json]",
		Short: "Describe the JVM of a pod's container from the outside, touching nothing",
		Long: `Ask the agent of the pod's node what it sees of the pod's JVM from the
outside: the JVM, the allocator and its heap profiler, the unwinder, the
profilers loaded, the signals (safeattach inspect's report, without the
command line). Nothing is sent to the JVM. It needs get on
profiles.safeattach.io named as the pod.

Exit status: 0; 1 unauthenticated (401), forbidden (403), no such pod or
JVM (404) or a usage or connection error; 3 when the JVM could not be
inspected.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.inspect(cmd.Context(), config(), args[0], stdout, cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVarP(&o.container, "container", "c", "", "the pod's container (needed when it runs more than one)")
	o.connectionFlags(cmd)
	return cmd
}

func (o *profileOptions) inspect(ctx context.Context, cc clientcmd.ClientConfig, pod string, stdout, stderr io.Writer) error {
	var r preflight.Report
	if err := o.askJSON(ctx, cc, pod, http.MethodGet, "inspect", url.Values{}, stderr, &r); err != nil || o.json {
		return err
	}
	out := printable.NewWriter(stdout)
	reporttext.Write(out, &r)
	return out.Close()
}

// askJSON is ask for a JSON answer, decoded into v (at most 4 MiB), and
// with --json printed on stdout, re-encoded: JSON's escapes reach the
// terminal, not the agent's bytes.
func (o *profileOptions) askJSON(ctx context.Context, cc clientcmd.ClientConfig, pod, method, action string, q url.Values, stderr io.Writer, v any) error {
	resp, done, err := o.ask(ctx, cc, pod, method, action, q, 2*time.Minute, stderr)
	if err != nil {
		return err
	}
	defer done()
	var raw json.RawMessage
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&raw); err != nil {
		return &exitError{3, fmt.Sprintf("the agent's answer to %s is not JSON: %v", action, err)}
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return &exitError{3, fmt.Sprintf("the agent's answer to %s is not what it should be: %v", action, err)}
	}
	if o.json {
		var any any
		json.Unmarshal(raw, &any)
		enc := json.NewEncoder(o.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(any)
	}
	return nil
}

// checkFormat refuses a format the agent would refuse.
func checkFormat(format string) error {
	switch format {
	case "collapsed", "pprof", "jfr", "flamegraph":
		return nil
	}
	return fmt.Errorf("-o %q: want collapsed, pprof, jfr or flamegraph", format)
}
