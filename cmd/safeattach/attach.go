package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/safeattach/safeattach/profiling"

	"github.com/spf13/cobra"

	"github.com/safeattach/safeattach/attach"
)

// attachFlags are shared by load, jcmd and profile.
type attachFlags struct {
	timeout time.Duration
	pf      policyFlags
	verbose bool
}

func (a *attachFlags) register(cmd *cobra.Command, def time.Duration) {
	cmd.Flags().DurationVar(&a.timeout, "timeout", def, "deadline for the whole operation (inspection, attach, health check)")
	cmd.Flags().BoolVarP(&a.verbose, "verbose", "v", false, "log every decision to stderr")
	a.pf.register(cmd)
}

func (a *attachFlags) options(cmd *cobra.Command) (attach.Options, error) {
	if cmd.Flags().Changed("timeout") || a.timeout != 0 {
		if err := checkTimeout("--timeout", a.timeout); err != nil {
			return attach.Options{}, err
		}
	}
	o := attach.Options{
		Timeout: a.timeout, RuleFiles: a.pf.rules, Acks: a.pf.acks, Strict: a.pf.strict,
		AllowAgents: a.pf.allow, DenyAgents: a.pf.deny, Caller: "cli:" + currentUser(), CrashMemory: a.pf.options().CrashMemory,
	}
	if a.verbose {
		o.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
	}
	return o, nil
}

// printPick says on stderr that the agent given was refused and which
// build was loaded instead (--pick-agent): never without saying so.
func printPick(stderr io.Writer, p *attach.AgentPick) {
	if p != nil {
		fmt.Fprintf(stderr, "%s (--pick-agent)\n", p)
	}
}

func currentUser() string {
	if u := os.Getenv("SUDO_USER"); u != "" {
		return u
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return fmt.Sprintf("uid %d", os.Geteuid())
}

// attachError maps a library error to the CLI's exit code through
// attach.OutcomeOf (the audit record's classification too), printing the
// refusal or the hang report first.
func attachError(w io.Writer, err error, asJSON bool) error {
	var refused *attach.RefusedError
	var hang *attach.HangError
	var busy *profiling.BusyError
	switch attach.OutcomeOf(err) {
	case attach.OutcomeRefused:
		if errors.As(err, &busy) {
			return withCode(exitRefused, fmt.Errorf("%v; the running profiler was left as it was", err))
		}
		if !errors.As(err, &refused) || refused.Reason != "" {
			return withCode(exitRefused, fmt.Errorf("%v; nothing was sent to the target", err))
		}
		if !asJSON {
			printFindings(w, refused.Verdict)
		}
		return withCode(exitRefused, fmt.Errorf("refused by %s; nothing was sent to the target%s", strings.Join(refused.Verdict.Causes(), ", "), refused.AlternativeHint()))
	case attach.OutcomeTimedOut:
		if errors.As(err, &hang) && hang.Report != nil && !asJSON {
			printHangReport(w, hang.Report)
			// The report above has the conclusion: the last line says
			// what happened to the command, not the same sentence again.
			return withCode(exitTimedOut, fmt.Errorf("pid %d: no answer to %s: %v (the hang report above)", hang.PID, hang.Step, hang.Err))
		}
		return withCode(exitTimedOut, err)
	case attach.OutcomeFailed:
		return withCode(exitFailed, err)
	}
	return err
}

func newLoadCmd() *cobra.Command {
	var (
		af     attachFlags
		asJSON bool
		pick   bool
	)
	cmd := &cobra.Command{
		Use:   "load [--timeout DUR] [--ack RULE-ID]... [--pick-agent] [--json] PID AGENT_PATH [AGENT_OPTIONS]",
		Short: "Load a JVMTI agent into a JVM if it is safe (exit 2 refused, 3 failed, 4 hung)",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := parsePID(args[0])
			if err != nil {
				return err
			}
			options := ""
			if len(args) == 3 {
				options = args[2]
			}
			opts, err := af.options(cmd)
			if err != nil {
				return err
			}
			start := time.Now()
			res, lerr := attach.Load(cmd.Context(), pid, args[1], options, opts)
			if pick {
				res, lerr = loadPicked(cmd, pid, args[1], options, opts, res, lerr)
			}
			w := cmd.OutOrStdout()
			err = attachError(w, lerr, asJSON)
			if asJSON {
				writeResult(w, newResult("load", pid, start, res, lerr), err)
				return err
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "loaded %s into pid %d in %v; the JVM answers\n", res.Agent.Path, pid, time.Duration(res.Duration).Round(time.Millisecond))
			if out := strings.TrimSpace(res.Output); out != "" {
				fmt.Fprintln(w, out)
			}
			printFindings(w, res.Verdict)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.Flags().BoolVar(&pick, "pick-agent", false, "when the rules refuse the agent for what it is and allow another async-profiler build on this host, load the first such build instead and say so on stderr")
	af.register(cmd, attach.DefaultLoadTimeout)
	return cmd
}

// loadPicked is load --pick-agent: a refusal of the agent for what it is,
// naming another build the rules allow, loads that build instead (judged
// again from the start), said on stderr and in the result.
func loadPicked(cmd *cobra.Command, pid int, agentPath, options string, opts attach.Options, res *attach.Result, err error) (*attach.Result, error) {
	var refused *attach.RefusedError
	if !errors.As(err, &refused) || len(refused.Alternatives) == 0 {
		return res, err
	}
	alt := refused.Alternatives[0]
	var given attach.Alternative
	if a, ierr := attach.FindAgent(cmd.Context(), agentPath); ierr == nil {
		given = attach.AlternativeOf(a, "")
	}
	p := &attach.AgentPick{Refused: given, Rules: refused.Verdict.Causes(), Picked: alt}
	printPick(cmd.ErrOrStderr(), p)
	res, err = attach.Load(cmd.Context(), pid, alt.Path, options, opts)
	if res != nil {
		res.Picked = p
		if res.Agent != nil {
			p.Picked = attach.AlternativeOf(res.Agent, alt.Found)
		}
	}
	return res, err
}

func newJcmdCmd() *cobra.Command {
	var (
		af     attachFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "jcmd [--timeout DUR] PID COMMAND [ARGS...]",
		Short: "Run a diagnostic command in a JVM, with a deadline",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := parsePID(args[0])
			if err != nil {
				return err
			}
			opts, err := af.options(cmd)
			if err != nil {
				return err
			}
			start := time.Now()
			res, jerr := attach.Jcmd(cmd.Context(), pid, strings.Join(args[1:], " "), opts)
			w := cmd.OutOrStdout()
			err = attachError(w, jerr, asJSON)
			if asJSON {
				writeResult(w, newResult("jcmd", pid, start, res, jerr), err)
				return err
			}
			if res != nil {
				fmt.Fprint(w, res.Output)
			}
			return err
		},
	}
	// Everything after the command belongs to it: "jcmd PID Thread.print -l".
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON (the output in its output field)")
	af.register(cmd, attach.DefaultJcmdTimeout)
	return cmd
}
