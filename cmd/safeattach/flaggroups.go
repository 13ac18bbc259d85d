package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// flagGroup is a heading of a command's help and the flags under it.
type flagGroup struct {
	title string
	names []string
}

// profileFlagGroups groups profile's flags as asprof's help does (what
// to profile, how the output looks), then safeattach's own: one
// alphabetical block of seventy flags hid the ones a user looks for.
var profileFlagGroups = []flagGroup{
	{"What to profile (as asprof)", []string{"event", "duration", "interval", "jstackdepth", "threads", "all-user", "alloc", "live", "tlab",
		"lock", "wall", "nativemem", "nofree", "nativelock", "nobatch", "trace", "all", "record-cpu", "sched", "ttsp", "begin", "end",
		"nostop", "cstack", "signal", "clock", "target-cpu", "proc", "memlimit", "features", "fdtransfer", "fdtransfer-kernel", "engine", "fallback"}},
	{"Output (as asprof)", []string{"file", "output", "loop", "mode", "simple", "norm", "sig", "ann", "lib", "dot", "include", "exclude",
		"filter", "title", "width", "height", "minwidth", "reverse", "inverted", "samples", "total", "chunksize", "chunktime", "jfrsync",
		"jfropts", "log", "json", "progress"}},
	{"Target", []string{"container", "pod", "pod-uid"}},
	{"Safety", []string{"agent", "pick-agent", "timeout", "takeover", "event-fallback", "ack", "strict", "rules", "allow-agent", "deny-agent",
		"crash-memory", "verbose", "libpath", "version", "help"}},
}

// groupedUsage prints cmd's usage with its flags under groups; a flag no
// group names goes under "Other flags", so none is ever left out.
func groupedUsage(groups []flagGroup) func(*cobra.Command) error {
	return func(cmd *cobra.Command) error {
		w := cmd.OutOrStderr()
		fmt.Fprintf(w, "Usage:\n  %s\n", cmd.UseLine())
		if cmd.HasExample() {
			fmt.Fprintf(w, "\nExamples:\n%s\n", cmd.Example)
		}
		all := cmd.Flags()
		placed := map[string]bool{}
		for _, g := range groups {
			set := pflag.NewFlagSet(g.title, pflag.ContinueOnError)
			for _, n := range g.names {
				if f := all.Lookup(n); f != nil && !f.Hidden {
					set.AddFlag(f)
					placed[n] = true
				}
			}
			if set.HasFlags() {
				fmt.Fprintf(w, "\n%s:\n%s", g.title, set.FlagUsages())
			}
		}
		rest := pflag.NewFlagSet("other", pflag.ContinueOnError)
		all.VisitAll(func(f *pflag.Flag) {
			if !placed[f.Name] && !f.Hidden {
				rest.AddFlag(f)
			}
		})
		if rest.HasFlags() {
			fmt.Fprintf(w, "\nOther flags:\n%s", rest.FlagUsages())
		}
		return nil
	}
}
