package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/companion"
	"github.com/safeattach/safeattach/internal/printable"
	"github.com/safeattach/safeattach/internal/reporttext"
	"github.com/safeattach/safeattach/preflight"
	"github.com/safeattach/safeattach/target"
)

func newInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect [--json] PID",
		Short: "Describe a process from the outside, without touching it (no judgement)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := parsePID(args[0])
			if err != nil {
				return err
			}
			r, err := preflight.Inspect(cmd.Context(), pid, preflight.Options{})
			if err != nil {
				if asJSON {
					return jsonFailure(cmd.OutOrStdout(), "inspect", pid, err)
				}
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), struct {
					attach.Envelope
					*preflight.Report
				}{newEnvelope("inspect", nil), r})
			}
			// Paths, versions and settings are the target's words.
			out := printable.NewWriter(cmd.OutOrStdout())
			reporttext.Write(out, r)
			return out.Close()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// parsePID reads the target argument every command takes, with
// target.Parse and target.Resolve; pod:NAMESPACE/NAME goes through
// safeattach-kube.
func parsePID(s string) (int, error) {
	spec, err := target.Parse(s)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultInspectTimeout)
	defer cancel()
	return target.Resolve(ctx, spec, target.Options{}, podContainer)
}

// podContainer is target.PodLookup through safeattach-kube.
func podContainer(_ context.Context, namespace, pod, container string) (string, error) {
	ref := namespace + "/" + pod
	if container != "" {
		ref += "/" + container
	}
	return containerOfPod(ref)
}

// containerOfPod resolves NAMESPACE/NAME[/CONTAINER] to the container's
// runtime ID with safeattach-kube (beside this binary, else on PATH),
// which asks the Kubernetes API and checks that the pod runs on this node.
// It is a separate binary to keep net/http and crypto/tls out of every
// other call's start-up.
func containerOfPod(ref string) (string, error) {
	helper, err := companion.Find("safeattach-kube", "pod: targets")
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultInspectTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, helper, "container-id", ref)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return "", errors.New(msg)
		}
		return "", fmt.Errorf("pod:%s: %v", ref, err)
	}
	return strings.TrimSpace(stdout.String()), nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
