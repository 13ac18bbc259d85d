// Command inhouse-tool is the smallest useful program on top of
// safeattach: judge whether an agent may be attached to a JVM, print the
// verdict, and attach only if it is allowed.
//
//	go run ./examples/inhouse-tool PID AGENT_PATH [AGENT_OPTIONS]
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/preflight"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: inhouse-tool PID AGENT_PATH [AGENT_OPTIONS]")
		os.Exit(1)
	}
	pid, err := strconv.Atoi(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "not a pid:", os.Args[1])
		os.Exit(1)
	}
	options := ""
	if len(os.Args) > 3 {
		options = os.Args[3]
	}
	ctx := context.Background()

	// 1. Look at the target and the agent from the outside.
	report, err := preflight.Inspect(ctx, pid, preflight.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agent, err := preflight.InspectAgent(context.Background(), os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agent.Options = options

	// 2. Judge the combination with the built-in knowledge base.
	verdict := conflicts.Evaluate(report, agent, conflicts.Policy{})
	fmt.Printf("pid %d (%s %s): allowed=%v\n", pid, report.JVM.Kind, report.JVM.Version, verdict.Allowed)
	for _, f := range verdict.Findings {
		fmt.Printf("  [%s] %s: %s\n", f.Severity, f.Rule, f.Message)
	}
	if !verdict.Allowed {
		os.Exit(2)
	}

	// 3. Attach through the safe door: it judges again (the target may have
	// changed) and bounds everything by a deadline.
	res, err := attach.Load(ctx, pid, agent.Path, options, attach.Options{})
	var refused *attach.RefusedError
	switch {
	case errors.As(err, &refused):
		fmt.Println("refused:", refused)
		os.Exit(2)
	case err != nil:
		fmt.Println("attach failed:", err)
		os.Exit(3)
	}
	fmt.Printf("loaded in %v; the JVM answers\n", res.Duration)
}
