// Command safeattach inspects a JVM from the outside and attaches agents
// to it only when that is safe. See the README for the command reference.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/printable"
)

// Exit codes (README, "CLI"; each row has its test): scripts and CI gate
// on them.
const (
	exitOK       = 0
	exitError    = 1 // usage or internal error
	exitRefused  = 2 // refused by preflight: nothing was sent to the target
	exitFailed   = 3 // attach or agent failure, or the JVM exited during it
	exitTimedOut = 4 // the deadline passed; a hang report was printed if one could be made
	// An interrupted command exits 128 + the signal's number, as shells
	// report it: 130 for SIGINT, 143 for SIGTERM (a profile stopped early
	// and written exits 0; within stopBound of the first signal).
	exitSignalBase = 128
)

// Deadlines of the commands that only read.
const (
	defaultInspectTimeout = 30 * time.Second
	defaultScanTimeout    = 2 * time.Minute
	// maxTimeout is the longest --timeout taken: a day is longer than
	// any attach; a larger value is a typo (300h for 300s).
	maxTimeout = 24 * time.Hour
)

// checkTimeout refuses durations that cannot be meant: zero or negative
// used to mean "the default" silently.
func checkTimeout(flag string, d time.Duration) error {
	switch {
	case d <= 0:
		return fmt.Errorf("%s %v: want a positive duration such as 30s or 2m", flag, d)
	case d > maxTimeout:
		return fmt.Errorf("%s %v: longer than %v; is the unit right?", flag, d, maxTimeout)
	}
	return nil
}

// inspectError gives an error from a read-only step its exit code: the
// deadline passing is 4, like any other step.
func inspectError(err error) error {
	if attach.OutcomeOf(err) == attach.OutcomeTimedOut {
		return withCode(exitTimedOut, fmt.Errorf("deadline reached: %w", err))
	}
	return err
}

// exitError carries a specific exit code out of a command.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func withCode(code int, err error) error { return &codedError{code: code, err: err} }

// version is set at build time by make build (-ldflags "-X
// main.version=$(git describe)"); otherwise the module version and VCS
// revision Go records in the binary are used.
var version = ""

// versionString is what `safeattach version` and --version print.
func versionString() string {
	v, rev, dirty, goVersion := version, "", false, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "devel"
	}
	out := "safeattach " + v
	var extra []string
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if dirty {
			rev += "-dirty"
		}
		extra = append(extra, "revision "+rev)
	}
	if goVersion != "" {
		extra = append(extra, goVersion)
	}
	if len(extra) > 0 {
		out += " (" + strings.Join(extra, ", ") + ")"
	}
	return out
}

// subcommands are the commands in the order help lists them.
var subcommands = []struct {
	name string
	make func() *cobra.Command
}{
	{"inspect", func() *cobra.Command { return targeted(newInspectCmd(), false) }},
	{"check", func() *cobra.Command { return targeted(newCheckCmd(), false) }},
	{"load", func() *cobra.Command { return targeted(newLoadCmd(), false) }},
	{"jcmd", func() *cobra.Command { return targeted(newJcmdCmd(), false) }},
	{"profile", func() *cobra.Command { return targeted(newProfileCmd(), true) }},
	{"diagnose", func() *cobra.Command { return targeted(newDiagnoseCmd(), false) }},
	{"scan", newScanCmd},
	{"rules", newRulesCmd},
	{"version", newVersionCmd},
	{"fdtransfer-serve", newFdTransferServeCmd},
}

// newRootCmd builds the command tree for args. When args name a
// subcommand only that one is built: each command's flags cost
// allocations at start-up, paid by every invocation (a CI gate calling
// jcmd in a loop); help, completion and unknown commands get the whole
// tree.
func newRootCmd(stdout, stderr io.Writer, args []string) *cobra.Command {
	root := &cobra.Command{
		Use:           "safeattach",
		Short:         "Attach agents such as async-profiler to production JVMs safely",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	for _, sc := range subcommands {
		if len(args) > 0 && args[0] == sc.name {
			// The root only dispatches here, so what only the root
			// itself can run is left out: --version (its text parses
			// the build information) and cobra's completion command
			// (a subcommand per shell, each with its flags), neither
			// reachable once args[0] names another command.
			root.CompletionOptions.DisableDefaultCmd = true
			root.AddCommand(sc.make())
			return root
		}
	}
	root.Version = versionString()
	root.SetVersionTemplate("{{.Version}}\n")
	for _, sc := range subcommands {
		root.AddCommand(sc.make())
	}
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), versionString())
			return nil
		},
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// A terminal obeys the escape sequences a target can put into what
	// is printed (a profile, a jcmd's answer, a thread's name): there,
	// everything is escaped. A pipe or a file gets the bytes unchanged.
	if isTerminal(stdout) {
		tw := printable.NewWriter(stdout)
		defer tw.Close()
		stdout = tw
	}
	root := newRootCmd(stdout, stderr, args)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ce *codedError
	// Interrupted: exit 128+signal, also when the step the signal cut
	// short reported itself as a failure of its own (a listener that
	// did not start because the wait for it was cancelled is not an
	// attach failure, exit 3).
	if sig, ok := context.Cause(ctx).(signalled); ok && (!errors.As(err, &ce) || errors.Is(err, context.Canceled)) {
		fmt.Fprintf(stderr, "safeattach: interrupted by %v: %s\n", sig.sig, printable.String(err.Error()))
		return exitSignalBase + int(sig.sig)
	}
	// The message can quote the target (a path it maps, its agent's
	// words): stderr is a terminal or a log.
	fmt.Fprintln(stderr, "safeattach:", printable.String(err.Error()))
	if errors.As(err, &ce) {
		return ce.code
	}
	return exitError
}

// signalled is the cause of a context ended by SIGINT or SIGTERM.
type signalled struct{ sig syscall.Signal }

func (s signalled) Error() string { return "interrupted by " + s.sig.String() }

// stopBound is how long an interrupted command has, from its first
// SIGINT or SIGTERM, to undo what it started: stop the profiler and write
// what it collected (attach.StopAfterCancel), remove the trigger file
// and any copy not in use, with a margin for unwinding. Past it the
// process exits 128 + the signal, saying so; a profiler it could not
// stop then ends by its own timeout= (started with every collect).
const stopBound = attach.StopAfterCancel + 5*time.Second

// withSignals returns a context that the first SIGINT or SIGTERM cancels,
// so that every step unwinds through its cleanups (the trigger file, an
// unused agent copy, a profiler left running). Later signals never cut
// that short — `timeout -s INT` signals its child and then its process
// group, two SIGINTs at once — they only say, once, that it is already
// stopping; if it is not done bound (stopBound) after the first, the
// process exits 128 + that signal's number.
func withSignals(stderr io.Writer, bound time.Duration) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		var first syscall.Signal
		select {
		case s := <-ch:
			first = s.(syscall.Signal)
		case <-done:
			return
		}
		cancel(signalled{first})
		limit := time.NewTimer(bound)
		defer limit.Stop()
		told := false
		for {
			select {
			case s := <-ch:
				if !told {
					fmt.Fprintf(stderr, "safeattach: %v: already stopping; done within %v of the first signal (the profiler stopped, what it collected written)\n", s, bound)
					told = true
				}
			case <-limit.C:
				fmt.Fprintf(stderr, "safeattach: interrupted by %v, and the clean-up did not finish within %v: exiting; a profiler still running ends by its own timeout\n", first, bound)
				os.Exit(exitSignalBase + int(first))
			case <-done:
				return
			}
		}
	}()
	// The handlers stay until the process exits: a signal that arrives
	// as it exits does not change its exit code.
	return ctx, func() { close(done); cancel(nil) }
}

// main installs the signal handlers first: until then SIGTERM has the Go
// runtime's default action (exit at once), harmless only because nothing
// has been done yet.
func main() {
	ctx, stop := withSignals(os.Stderr, stopBound)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
