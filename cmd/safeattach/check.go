package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/attach/crashmem"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/internal/reporttext"
	"github.com/safeattach/safeattach/preflight"
)

// checkOutput is `check --json`: the documented contract (pid, allowed,
// findings, jvm, libraries) plus the agent that was judged.
type checkOutput struct {
	attach.Envelope
	PID          int                       `json:"pid"`
	Allowed      bool                      `json:"allowed"`
	Findings     []conflicts.Finding       `json:"findings"`
	Acknowledged []string                  `json:"acknowledged,omitempty"`
	JVM          checkJVM                  `json:"jvm"`
	Libraries    []preflight.LoadedLibrary `json:"libraries"`
	Agent        *preflight.Agent          `json:"agent,omitempty"`
	Unknowns     []preflight.UnknownFact   `json:"unknowns,omitempty"`
	// Alternatives are the other async-profiler builds the rules allow
	// here when they refuse the agent; PickedAgent the one judged
	// instead (--pick-agent).
	Alternatives []attach.Alternative `json:"alternatives,omitempty"`
	PickedAgent  *attach.AgentPick    `json:"picked_agent,omitempty"`
}

type checkJVM struct {
	Kind    preflight.JVMKind `json:"kind"`
	Version string            `json:"version,omitempty"`
}

type policyFlags struct {
	timeout time.Duration
	rules   []string
	acks    []string
	strict  bool
	allow   []string
	deny    []string
	// agentOptions are the options the agent will get (check only).
	agentOptions string
	// crashMemory is a crash memory file to consult (a daemon's).
	crashMemory string
}

func (p *policyFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&p.rules, "rules", nil, "extra rule file (repeatable)")
	cmd.Flags().StringVar(&p.crashMemory, "crash-memory", "", "a crash memory file to consult (the node agent's crash_memory): workloads that crashed after an attach are refused until acknowledged")
	cmd.Flags().StringArrayVar(&p.acks, "ack", nil, "acknowledge one blocking rule by ID (repeatable); there is no blanket override")
	cmd.Flags().BoolVar(&p.strict, "strict", false, "treat warnings as blocks")
	cmd.Flags().StringArrayVar(&p.allow, "allow-agent", nil, "admit only agents with this path or SHA-256 (repeatable)")
	cmd.Flags().StringArrayVar(&p.deny, "deny-agent", nil, "refuse agents with this path or SHA-256 (repeatable)")
}

// options are the policy flags as the library's options.
func (p *policyFlags) options() attach.Options {
	o := attach.Options{Timeout: p.timeout, RuleFiles: p.rules, Acks: p.acks, Strict: p.strict, AllowAgents: p.allow, DenyAgents: p.deny}
	if p.crashMemory != "" {
		// Consulted only: a one-shot command cannot follow a JVM for
		// minutes after it exits.
		o.CrashMemory = crashmem.Open(p.crashMemory)
	}
	return o
}

func newCheckCmd() *cobra.Command {
	var (
		agentPath string
		asJSON    bool
		pick      bool
		pf        policyFlags
	)
	cmd := &cobra.Command{
		Use:   "check [--agent PATH] [--rules FILE]... [--ack RULE-ID]... [--strict] [--json] PID",
		Short: "Judge whether attaching an agent to a JVM is safe (exit 0 allowed, 2 refused)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := parsePID(args[0])
			if err != nil {
				return err
			}
			if err := checkTimeout("--timeout", pf.timeout); err != nil {
				return err
			}
			res, err := attach.Check(cmd.Context(), pid, agentPath, pf.agentOptions, pf.options())
			if err != nil {
				if asJSON {
					return jsonFailure(cmd.OutOrStdout(), "check", pid, inspectError(err))
				}
				return inspectError(err)
			}
			picked, res := pickChecked(cmd, pid, res, pick, pf)
			report, agent, v := res.Report, res.Agent, res.Verdict
			out := checkOutput{
				Alternatives: res.Alternatives, PickedAgent: picked,
				PID: pid, Allowed: v.Allowed, Findings: v.Findings, Acknowledged: v.Acknowledged,
				JVM:       checkJVM{Kind: report.JVM.Kind, Version: report.JVM.Version},
				Libraries: report.Libraries, Agent: agent, Unknowns: report.Unknowns,
			}
			if out.Libraries == nil {
				out.Libraries = []preflight.LoadedLibrary{}
			}
			var refused error
			if !v.Allowed {
				hint := ""
				if len(res.Alternatives) > 0 {
					a := res.Alternatives[0]
					hint = fmt.Sprintf("; %s is allowed here: --agent %s", a, a.Path)
				}
				refused = withCode(exitRefused, fmt.Errorf("refused by %s%s", strings.Join(v.Causes(), ", "), hint))
			}
			if asJSON {
				out.Envelope = newEnvelope("check", refused)
				if err := writeJSON(cmd.OutOrStdout(), out); err != nil {
					return err
				}
			} else {
				printVerdict(cmd.OutOrStdout(), report, agent, v)
			}
			return refused
		},
	}
	cmd.Flags().StringVar(&agentPath, "agent", "", "the agent library to judge (default: the installed async-profiler, else the worst plausible agent)")
	cmd.Flags().StringVar(&pf.agentOptions, "agent-options", "", "the options the agent will get (e.g. start,event=alloc): some hazards depend on them")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the verdict as JSON")
	cmd.Flags().BoolVar(&pick, "pick-agent", false, "when the rules refuse the agent and allow another async-profiler build on this host, judge the first such build instead (and say so)")
	cmd.Flags().DurationVar(&pf.timeout, "timeout", defaultInspectTimeout, "deadline for reading the rules, the agent and the process")
	pf.register(cmd)
	return cmd
}

// pickChecked is --pick-agent for check: a verdict refusing the agent
// for what it is, with another build allowed, is replaced by that
// build's, said on stderr.
func pickChecked(cmd *cobra.Command, pid int, res *attach.CheckResult, pick bool, pf policyFlags) (*attach.AgentPick, *attach.CheckResult) {
	if !pick || res.Verdict.Allowed || len(res.Alternatives) == 0 {
		return nil, res
	}
	alt := res.Alternatives[0]
	again, err := attach.Check(cmd.Context(), pid, alt.Path, pf.agentOptions, pf.options())
	if err != nil || !again.Verdict.Allowed {
		return nil, res
	}
	p := &attach.AgentPick{Refused: attach.AlternativeOf(res.Agent, ""), Rules: res.Verdict.Causes(), Picked: attach.AlternativeOf(again.Agent, alt.Found)}
	printPick(cmd.ErrOrStderr(), p)
	return p, again
}

func printVerdict(w io.Writer, r *preflight.Report, a *preflight.Agent, v conflicts.Verdict) {
	target := fmt.Sprintf("pid %d (%s", r.PID, r.Process.Name)
	if r.JVM.Kind != preflight.JVMNone {
		target += fmt.Sprintf(", %s %s", r.JVM.Kind, reporttext.OrUnknown(r.JVM.Version))
	}
	target += ")"
	agent := "no agent"
	if a != nil {
		agent = a.Path
		if a.Assumed {
			agent = "an assumed worst-case agent (none given or installed)"
		} else if a.Version != "" {
			agent = fmt.Sprintf("%s %s (%s)", a.Kind, a.Version, a.Path)
		}
	}
	if v.Allowed {
		fmt.Fprintf(w, "ALLOWED  %s  agent: %s\n", target, agent)
	} else {
		fmt.Fprintf(w, "REFUSED  %s  agent: %s  by %s\n", target, agent, strings.Join(v.Causes(), ", "))
	}
	shown, hidden := shownFindings(v)
	defer func() {
		if hidden > 0 {
			fmt.Fprintf(w, "\n(%d more could not be determined; --json lists them)\n", hidden)
		}
	}()
	for _, f := range shown {
		tag := f.Severity
		switch {
		case f.Acknowledged:
			tag += ", acknowledged"
		case f.Escalated:
			tag += ", --strict"
		case f.Undetermined:
			tag += ", undetermined"
		}
		fmt.Fprintf(w, "\n[%s] %s\n  %s\n", tag, f.Rule, f.Message)
		if f.Remedy != "" {
			fmt.Fprintf(w, "  remedy: %s\n", f.Remedy)
		}
		for _, e := range f.Evidence {
			fmt.Fprintf(w, "  - %s\n", e)
		}
		for _, ref := range f.References {
			fmt.Fprintf(w, "  see %s\n", ref)
		}
	}
}
