package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// targetFlags are the flag forms of the PID argument's container:, pod-uid:
// and pod: forms, for scripts that build command lines from a pod spec.
var targetFlags = []struct{ name, prefix, usage string }{
	{"container", "container:", "target the JVM in this container (runtime://ID, 64 hex or a 12+ prefix) instead of a PID"},
	{"pod-uid", "pod-uid:", "target the JVM in the pod with this UID instead of a PID"},
	{"pod", "pod:", "target the JVM in NAMESPACE/NAME[/CONTAINER], looked up in the Kubernetes API, instead of a PID"},
}

// targeted lets cmd take its PID argument from one of targetFlags: the
// flag's value becomes the argument, first or (atEnd) last.
func targeted(cmd *cobra.Command, atEnd bool) *cobra.Command {
	for _, f := range targetFlags {
		cmd.Flags().String(f.name, "", f.usage)
	}
	withTarget := func(cmd *cobra.Command, args []string) ([]string, error) {
		var target string
		for _, f := range targetFlags {
			v, _ := cmd.Flags().GetString(f.name)
			if v == "" {
				continue
			}
			if target != "" {
				return nil, fmt.Errorf("--container, --pod-uid and --pod name one target: give one")
			}
			target = f.prefix + v
		}
		if target == "" {
			return args, nil
		}
		if atEnd {
			return append(append([]string(nil), args...), target), nil
		}
		return append([]string{target}, args...), nil
	}
	validate, run := cmd.Args, cmd.RunE
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		args, err := withTarget(cmd, args)
		if err != nil {
			return err
		}
		if validate == nil {
			return nil
		}
		return validate(cmd, args)
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		args, err := withTarget(cmd, args)
		if err != nil {
			return err
		}
		return run(cmd, args)
	}
	return cmd
}
