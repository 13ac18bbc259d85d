package attach

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/safeattach/safeattach/attach/crashmem"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/preflight"
)

// Default deadlines. A healthy async-profiler attach to a JVM under
// tcmalloc's heap profiler took 39–64 s here, so the load deadline leaves
// room for it; commands that load nothing answer in milliseconds.
const (
	DefaultLoadTimeout   = 120 * time.Second
	DefaultJcmdTimeout   = 30 * time.Second
	DefaultHealthTimeout = 5 * time.Second
)

// Options configure one call. The zero value is the default.
type Options struct {
	// Timeout bounds the whole call: inspection, judgement, attach and
	// health check. Zero means DefaultLoadTimeout for Load and Profile and
	// DefaultJcmdTimeout for Jcmd. A deadline already on ctx also applies.
	Timeout time.Duration
	// RuleFiles are operator rule files added to the embedded ones.
	RuleFiles []string
	// Acks, Strict, AllowAgents and DenyAgents are the policy (see
	// conflicts.Policy). There is no blanket override.
	Acks        []string
	Strict      bool
	AllowAgents []string
	DenyAgents  []string
	// HealthTimeout bounds the post-attach check that the JVM still
	// answers (default DefaultHealthTimeout).
	HealthTimeout time.Duration
	// DiagnoseSample is how long a hang report samples CPU (default 1s);
	// it is taken from the caller's deadline budget only after the
	// deadline has passed, so a hung target costs Timeout plus this.
	DiagnoseSample time.Duration
	// NoWatch turns off the watcher that samples the target beside every
	// protocol step and ends the attach within seconds, with a hang
	// report, when it recognises a deadlock forming (diagnose.Watch).
	// Unrecognised stalls wait for the deadline either way.
	NoWatch bool
	// WatchInterval is the watcher's sampling interval (default 250 ms).
	WatchInterval time.Duration
	// CrashMemory, if set, is consulted before every attach (a workload
	// that crashed after an earlier one is refused by crashed-after-attach
	// until acknowledged). With CrashFollowUntil set too, it is told
	// about crashes: after a successful load the JVM is followed for
	// CrashWindow (default 10 min) by one goroutine, which records an
	// exit that leaves a HotSpot crash log and ends at the window's end
	// or when CrashFollowUntil is closed, whichever comes first (a daemon
	// passes the Done channel of its own lifetime; a one-shot caller,
	// which exits at once, passes none and only consults).
	CrashMemory      *crashmem.Store
	CrashFollowUntil <-chan struct{}
	CrashWindow      time.Duration
	// CrashScope keeps the crash memory's workloads apart
	// (crashmem.Workload): a node agent passes the pod's namespace.
	CrashScope string
	// Logger receives one record per decision (pid, agent, SHA-256, rule
	// IDs, outcome). Nil means no logging.
	Logger *slog.Logger
	// Audit, if set, receives one record per call, refusals included:
	// the trail a deployment agent keeps.
	Audit func(AuditRecord)
	// Caller names who asked, for the audit trail.
	Caller string
}

// ErrInvalidOptions: the call's options cannot be honoured as given (an
// acknowledgement of a hard rule or of no rule, a bad duration).
var ErrInvalidOptions = errors.New("invalid options")

// Policy loads the rule files under ctx and checks the acknowledgements,
// giving the conflicts.Policy these options stand for: what a caller that
// evaluates many reports itself (a scan) needs.
func (o Options) Policy(ctx context.Context) (conflicts.Policy, error) {
	rules, err := conflicts.Load(ctx, o.RuleFiles...)
	if err != nil {
		return conflicts.Policy{}, err
	}
	if err := rules.CheckAcks(o.Acks); err != nil {
		return conflicts.Policy{}, fmt.Errorf("%w: %v", ErrInvalidOptions, err)
	}
	return conflicts.Policy{Rules: rules, Acks: o.Acks, Strict: o.Strict, AllowAgents: o.AllowAgents, DenyAgents: o.DenyAgents}, nil
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// complete adds to a report and an agent what only the caller knows or
// what needs both: whether the target could load the agent, and the crash
// memory's record of the workload.
func (o Options) complete(ctx context.Context, r *preflight.Report, a *preflight.Agent, log *slog.Logger) {
	preflight.CheckLoadable(ctx, r, a)
	if o.CrashMemory == nil {
		return
	}
	e, err := o.CrashMemory.Lookup(crashmem.Workload(r, o.CrashScope))
	switch {
	case err != nil:
		log.Warn("safeattach: crash memory unreadable", "error", err)
	case e != nil:
		r.PriorCrash = fmt.Sprintf("pid %d at %s with %s: %s", e.PID, e.Time.Format(time.RFC3339), e.Agent, e.Evidence)
	}
}

// validate rejects what the zero-value convention cannot mean.
func (o Options) validate() error {
	if o.Timeout < 0 {
		return fmt.Errorf("%w: negative timeout %v", ErrInvalidOptions, o.Timeout)
	}
	return nil
}

func (o Options) withDeadline(ctx context.Context, def time.Duration) (context.Context, context.CancelFunc) {
	d := o.Timeout
	if d <= 0 {
		d = def
	}
	return context.WithTimeout(ctx, d)
}

// AuditRecord is one attach decision and its outcome.
type AuditRecord struct {
	Time         time.Time `json:"time"`
	Caller       string    `json:"caller,omitempty"`
	Operation    string    `json:"operation"` // load, jcmd, profile
	PID          int       `json:"pid"`
	JVM          string    `json:"jvm,omitempty"`
	Agent        string    `json:"agent,omitempty"`
	AgentSHA256  string    `json:"agent_sha256,omitempty"`
	AgentOptions string    `json:"agent_options,omitempty"`
	// PassedOver are the builds the rules refused here before Agent, as
	// "path (rule, ...)" (DoorRequest.Builds, PickAgent).
	PassedOver []string `json:"passed_over,omitempty"`
	Verdict    string   `json:"verdict"` // allowed, allowed-with-warnings, refused, none
	Allowed    bool     `json:"allowed"`
	Rules      []string `json:"rules,omitempty"` // IDs of block and warn findings
	Acks       []string `json:"acks,omitempty"`
	Outcome    Outcome  `json:"outcome"`
	Error      string   `json:"error,omitempty"`
	DurationMS int64    `json:"duration_ms"`
}
