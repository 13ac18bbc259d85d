package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/diagnose"
	"github.com/safeattach/safeattach/internal/printable"
)

func newDiagnoseCmd() *cobra.Command {
	var (
		asJSON bool
		sample time.Duration
		watch  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "diagnose [--json] [--watch DURATION] PID",
		Short: "Explain from outside what an unresponsive process is doing (exit 4 when it is hung)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := parsePID(args[0])
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("watch") {
				if err := checkTimeout("--watch", watch); err != nil {
					return err
				}
				return watchProcess(cmd, pid, watch, asJSON)
			}
			r, err := diagnose.Diagnose(cmd.Context(), pid, diagnose.Options{Sample: sample})
			if err != nil {
				if asJSON {
					return jsonFailure(cmd.OutOrStdout(), "diagnose", pid, err)
				}
				return err
			}
			var hung error
			if r.State == diagnose.Hung {
				hung = withCode(exitTimedOut, fmt.Errorf("pid %d is unresponsive: %s", pid, r.Conclusion))
			}
			if asJSON {
				if err := writeJSON(cmd.OutOrStdout(), struct {
					attach.Envelope
					*diagnose.HangReport
				}{newEnvelope("diagnose", hung), r}); err != nil {
					return err
				}
				return hung
			}
			printHangReport(cmd.OutOrStdout(), r)
			if hung != nil {
				return withCode(exitTimedOut, fmt.Errorf("pid %d is unresponsive (the hang report above)", pid))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().DurationVar(&sample, "sample", time.Second, "how long to measure CPU use")
	cmd.Flags().DurationVar(&watch, "watch", 0, "watch for this long, as safeattach does during an attach, and report a deadlock as soon as it is recognised")
	return cmd
}

// watchProcess is diagnose --watch: the attach watcher's judgement, live,
// for a process someone else attached to. It ends at the first recognised
// deadlock (exit 4, with the report) or after d (exit 0).
func watchProcess(cmd *cobra.Command, pid int, d time.Duration, asJSON bool) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), d)
	defer cancel()
	start := time.Now()
	r, err := diagnose.Watch(ctx, pid, diagnose.WatchOptions{})
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if r == nil {
		if asJSON {
			return writeJSON(w, map[string]any{"pid": pid, "watched_ms": time.Since(start).Milliseconds(), "deadlock": false})
		}
		fmt.Fprintf(w, "pid %d: no deadlock recognised in %v of watching\n", pid, time.Since(start).Round(time.Millisecond))
		return nil
	}
	if asJSON {
		err = writeJSON(w, r)
	} else {
		fmt.Fprintf(w, "deadlock recognised after %v of watching\n", time.Since(start).Round(time.Millisecond))
		printHangReport(w, r)
	}
	if err != nil {
		return err
	}
	return withCode(exitTimedOut, fmt.Errorf("pid %d is deadlocked: %s", pid, r.Conclusion))
}

// printHangReport prints the conclusion first, then locks shared by
// several threads, then each thread that is not simply idle-waiting.
func printHangReport(w io.Writer, r *diagnose.HangReport) {
	// A report on a process that is not hung is a diagnosis, not a hang
	// report: a healthy JVM opened with "HANG REPORT ... BUSY".
	if r.State == diagnose.Hung {
		fmt.Fprintf(w, "HANG REPORT pid %d (%s): HUNG\n", r.PID, r.Name)
	} else {
		fmt.Fprintf(w, "DIAGNOSIS pid %d (%s): %s, not hung\n", r.PID, r.Name, r.State)
	}
	fmt.Fprintf(w, "  %s\n", r.Conclusion)
	var parts []string
	for _, s := range r.Summary {
		parts = append(parts, fmt.Sprintf("%d %s", s.Count, s.What))
	}
	fmt.Fprintf(w, "  %s; %d CPU ticks in %d ms\n", strings.Join(parts, ", "), r.CPUTicks, r.SampleMillis)
	if len(r.Futexes) > 0 {
		fmt.Fprintln(w, "\nlocks (futexes) with waiters:")
		for _, g := range r.Futexes {
			if len(g.Threads) < 2 {
				continue
			}
			fmt.Fprintf(w, "  %#x %s: %d threads (%s)\n", g.Addr, g.Where, len(g.Threads), abbreviate(g.Names, 6))
		}
	}
	fmt.Fprintln(w, "\nnotable threads (callers unwound with each library's .eh_frame from the stack pointer: only frames it can vouch for):")
	others := map[string][]string{}
	var order []string
	// The threads the conclusion names come first, in its order.
	for _, tid := range r.Culprits {
		for _, t := range r.Threads {
			if t.TID == tid {
				printThread(w, t)
			}
		}
	}
	for _, t := range r.Threads {
		if slices.Contains(r.Culprits, t.TID) {
			continue
		}
		if !t.Notable {
			key := t.State
			if t.Syscall != "" {
				key += " in " + t.Syscall
			}
			if others[key] == nil {
				order = append(order, key)
			}
			others[key] = append(others[key], t.Name)
			continue
		}
		printThread(w, t)
	}
	for _, key := range order {
		fmt.Fprintf(w, "  %d other threads %s (%s)\n", len(others[key]), key, abbreviate(others[key], 5))
	}
}

func printThread(w io.Writer, t diagnose.Thread) {
	fmt.Fprintf(w, "  %d %q %s", t.TID, t.Name, t.State)
	if t.Syscall != "" {
		fmt.Fprintf(w, " in %s", t.Syscall)
		if t.FutexAddr != 0 {
			fmt.Fprintf(w, "(%#x)", t.FutexAddr)
		}
	}
	if t.Wchan != "" {
		fmt.Fprintf(w, " wchan=%s", t.Wchan)
	}
	if t.CPUTicks > 0 {
		fmt.Fprintf(w, " cpu=%d", t.CPUTicks)
	}
	fmt.Fprintln(w)
	if t.Where != "" {
		fmt.Fprintf(w, "      at %s\n", t.Where)
	}
	for i, c := range t.Callers {
		if i == 12 {
			fmt.Fprintf(w, "      ... %d more\n", len(t.Callers)-i)
			break
		}
		fmt.Fprintf(w, "      <- %s\n", c)
	}
	if t.UnwindStop != "" && t.Where != "" {
		fmt.Fprintf(w, "      (unwinding stopped: %s)\n", t.UnwindStop)
	}
}

func abbreviate(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:n], ", ") + fmt.Sprintf(", +%d", len(names)-n)
}

// printFindings lists a verdict's findings (after a refusal or an
// allowed load). When blocks decided from what was seen explain a
// refusal, what could not be determined is a consequence of the same
// cause (another user's process cannot be read) and is counted in one
// line rather than listed beside it; --json has every finding.
func printFindings(w io.Writer, v conflicts.Verdict) {
	shown, hidden := shownFindings(v)
	for _, f := range shown {
		// A message quotes what inspection found in the target (a
		// library's path, an environment variable): its user's text.
		fmt.Fprintf(w, "[%s] %s: %s\n", f.Severity, f.Rule, printable.String(f.Message))
		if f.Remedy != "" && f.Severity != conflicts.Info {
			fmt.Fprintf(w, "  remedy: %s\n", printable.String(f.Remedy))
		}
	}
	if hidden > 0 {
		fmt.Fprintf(w, "(%d more could not be determined; --json lists them)\n", hidden)
	}
}

// shownFindings drops the undetermined findings when the refusal has a
// decided cause, and says how many it dropped.
func shownFindings(v conflicts.Verdict) ([]conflicts.Finding, int) {
	decided := false
	for _, f := range v.Findings {
		decided = decided || f.Severity == conflicts.Block && !f.Undetermined
	}
	if !decided {
		return v.Findings, 0
	}
	var shown []conflicts.Finding
	for _, f := range v.Findings {
		if !f.Undetermined {
			shown = append(shown, f)
		}
	}
	return shown, len(v.Findings) - len(shown)
}
