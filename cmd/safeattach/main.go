// Command safeattach inspects a JVM from the outside and attaches agents
// to it only when that is safe. See the README for the command reference.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes (DESIGN.md, "CLI"): scripts and CI gate on them.
const (
	exitOK       = 0
	exitError    = 1 // usage or internal error
	exitRefused  = 2 // refused by preflight: nothing was sent to the target
	exitFailed   = 3 // attach or agent failure
	exitTimedOut = 4 // target unresponsive; a hang report was printed
)

// exitError carries a specific exit code out of a command.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func withCode(code int, err error) error { return &codedError{code: code, err: err} }

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "safeattach",
		Short:         "Attach agents such as async-profiler to production JVMs safely",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newInspectCmd(), newCheckCmd(), newLoadCmd(), newJcmdCmd(), newProfileCmd(), newDiagnoseCmd(), newScanCmd(), newRulesCmd(), newVersionCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), "safeattach", version)
			return nil
		},
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "safeattach:", err)
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	return exitError
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
