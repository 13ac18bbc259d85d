package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/safeattach/safeattach/conflicts"
)

func newRulesCmd() *cobra.Command {
	var (
		asJSON, facts bool
		files         []string
	)
	cmd := &cobra.Command{
		Use:   "rules [--json] [--facts] [RULE-ID]",
		Short: "List the knowledge base, explain one rule, or list the facts rules can test",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			if facts {
				if asJSON {
					return writeJSON(w, conflicts.Vocabulary())
				}
				for _, f := range conflicts.Vocabulary() {
					fmt.Fprintf(w, "%-40s %-8s %s\n", f.Name, f.Type, f.Description)
				}
				return nil
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), defaultInspectTimeout)
			defer cancel()
			set, err := conflicts.Load(ctx, files...)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				r, ok := set.Rule(args[0])
				if !ok {
					return fmt.Errorf("no rule %q (safeattach rules lists them)", args[0])
				}
				if asJSON {
					return writeJSON(w, r)
				}
				explainRule(cmd, &r)
				return nil
			}
			rules := set.Rules()
			if asJSON {
				return writeJSON(w, rules)
			}
			for _, r := range rules {
				hard := ""
				if r.Hard {
					hard = "hard"
				}
				fmt.Fprintf(w, "%-36s %-6s %-4s %s\n", r.ID, r.Severity(), hard, r.Title)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.Flags().BoolVar(&facts, "facts", false, "list the fact vocabulary instead")
	cmd.Flags().StringArrayVar(&files, "rules", nil, "extra rule file (repeatable)")
	return cmd
}

func explainRule(cmd *cobra.Command, r *conflicts.Rule) {
	w := cmd.OutOrStdout()
	hard := ""
	if r.Hard {
		hard = ", hard: cannot be acknowledged"
	}
	fmt.Fprintf(w, "%s  (%s%s, defined at %s)\n%s\n", r.ID, r.Severity(), hard, r.Source, r.Title)
	if r.Description != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(r.Description))
	}
	for i, c := range r.Cases {
		fmt.Fprintf(w, "\ncase %d: %s\n  message: %s\n", i+1, c.Severity, c.Message)
		if c.Remedy != "" {
			fmt.Fprintf(w, "  remedy: %s\n", c.Remedy)
		}
	}
	for _, ref := range r.References {
		fmt.Fprintf(w, "\nsee %s", ref)
	}
	fmt.Fprintln(w)
}
