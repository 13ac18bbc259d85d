package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/safeattach/safeattach/internal/safefile"
)

// Image is the container image the manifests in deploy/kubernetes run;
// a test keeps them in step.
const Image = "ghcr.io/safeattach/safeattach-daemon:0.9.0"

// DefaultListen is the metrics and health port (Prometheus exporters'
// range; the manifests' containerPort).
const DefaultListen = ":9464"

// Capabilities are the ones the daemon needs when it runs as root with
// every other capability dropped, measured on JDK 17 and 25 targets run
// as another user in their own pid and mount namespaces: without
// SYS_PTRACE the target's /proc files (maps, environ, root) cannot be
// read, without KILL the attach signal cannot be sent, without CHOWN the
// .attach_pid trigger file and the delivered agent cannot be given to the
// JVM's user, without DAC_OVERRIDE the JVM's socket (mode 0600, its
// owner's) cannot be connected to. JDKs that reject a root peer (8 and
// 9-10, see attach/hotspot) also need SETUID and SETGID: add them to the
// DaemonSet for such fleets.
var Capabilities = []string{"SYS_PTRACE", "KILL", "CHOWN", "DAC_OVERRIDE"}

// config is the daemon's configuration file (JSON). Secrets are read from
// files (a mounted Secret), never from the configuration itself.
type config struct {
	Listen   string `json:"listen"`
	Node     string `json:"node"`
	PodsFile string `json:"pods_file"`
	Agent    string `json:"agent"`
	// Agents are the async-profiler builds the node agent may load, in
	// order of preference: for each JVM the first the rules allow is
	// used (fleet.Config.Agents). Give agent or agents, not both.
	Agents []string `json:"agents"`
	Format string   `json:"format"`
	// Fallback is what profiles a JVM where the rules refuse every
	// async-profiler build: "jfr" (the JVM's own Flight Recorder) or
	// "none" (the default); a pod's profiles.safeattach.io/fallback
	// annotation overrides it.
	Fallback     string   `json:"fallback"`
	Event        string   `json:"event"`
	Window       duration `json:"window"`
	SyncInterval duration `json:"sync_interval"`
	// AttachTimeout bounds each command sent to a JVM (default 30 s).
	AttachTimeout duration `json:"attach_timeout"`
	// MaxWindowBytes caps one window read back from a JVM (default: half
	// the read-back budget, which is a quarter of the daemon's memory
	// limit).
	MaxWindowBytes int64 `json:"max_window_bytes"`
	// CrashMemory, if set, is a file (on a hostPath, to outlive the pod)
	// where the daemon remembers workloads that crashed after it attached
	// and refuses them until acknowledged (crashed-after-attach).
	CrashMemory string   `json:"crash_memory"`
	RuleFiles   []string `json:"rule_files"`
	// OnDemand, with a listen address, serves the on-demand profiling
	// API over HTTPS (fleet.OnDemandHandler): callers are authenticated
	// and authorised by the API server (TokenReview, SubjectAccessReview:
	// the node agent needs the system:auth-delegator ClusterRole).
	OnDemand  onDemandConfig `json:"on_demand"`
	Pyroscope struct {
		URL          string `json:"url"`
		TenantID     string `json:"tenant_id"`
		BasicUser    string `json:"basic_user"`
		PasswordFile string `json:"password_file"`
		TokenFile    string `json:"token_file"`
		QueueSize    int    `json:"queue_size"`
	} `json:"pyroscope"`
}

// onDemandConfig is the on-demand API's part of the configuration.
type onDemandConfig struct {
	Listen string `json:"listen"`
	// CertFile and KeyFile are the server's certificate (PEM); without
	// them the node agent makes a self-signed one at start and logs its
	// SHA-256 fingerprint, as a kubelet does.
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	// The bounds (fleet.OnDemandConfig; 0: its defaults) and how long
	// the API server's answers are cached (default 10 s).
	MaxDuration     duration `json:"max_duration"`
	MaxOutput       int64    `json:"max_output"`
	MaxConcurrent   int      `json:"max_concurrent"`
	MaxPerUser      int      `json:"max_per_user"`
	MaxPerNamespace int      `json:"max_per_namespace"`
	CacheTTL        duration `json:"cache_ttl"`
}

// duration is a time.Duration written as "60s" in JSON.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"60s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

const (
	maxConfigFile = 1 << 20
	maxSecretFile = 64 << 10
)

// loadConfig reads path (bounded, regular files only) and rejects
// unknown fields, so that a misspelt setting is an error, not a default.
func loadConfig(ctx context.Context, path string) (*config, error) {
	c := &config{Listen: DefaultListen}
	if path == "" {
		return c, nil
	}
	f, err := safefile.Read(ctx, path, maxConfigFile, safefile.Options{})
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(f.Data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	switch c.Fallback {
	case "", "none", "jfr":
	default:
		return nil, fmt.Errorf("config %s: fallback %q: want jfr or none", path, c.Fallback)
	}
	if c.Agent != "" && len(c.Agents) > 0 {
		return nil, fmt.Errorf("config %s: give agent (one build) or agents (builds in order of preference), not both", path)
	}
	if (c.OnDemand.CertFile == "") != (c.OnDemand.KeyFile == "") {
		return nil, fmt.Errorf("config %s: on_demand: give cert_file and key_file together", path)
	}
	for _, a := range c.Agents {
		if a == "" {
			return nil, fmt.Errorf("config %s: agents: an empty path", path)
		}
	}
	return c, nil
}

// readSecret reads a secret file; its content is never logged.
func readSecret(ctx context.Context, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	f, err := safefile.Read(ctx, path, maxSecretFile, safefile.Options{})
	if err != nil {
		return "", fmt.Errorf("secret: %w", err)
	}
	return strings.TrimSpace(string(f.Data)), nil
}
