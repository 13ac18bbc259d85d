package attach

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/preflight"
)

// Door is the safe door held open on one JVM: the agent found, read
// once, judged with the target and delivered, and the attach listener
// started — nothing loaded yet. Load sends the judged copy, by the path
// the JVM sees, as often as the caller needs, each command bounded by
// its context and watched for a deadlock forming; Healthy asks the JVM
// whether it still answers. It is what the profiling layer drives
// command by command; Load, Jcmd and Check are the one-shot doors.
//
// A Door's judgement is made once, when it opens.
type Door struct {
	c *call
	s *session
	// picked: the agent given was refused and another build loaded
	// (DoorRequest.Builds, DoorRequest.PickAgent).
	picked *AgentPick
}

// DoorRequest is what OpenDoor needs.
type DoorRequest struct {
	// Lib is the agent: a library or an install's home directory; empty
	// means the installed async-profiler ($ASYNC_PROFILER_HOME, asprof on
	// PATH, the usual install locations), else the one the JVM maps.
	Lib string
	// AgentOptions are the options the agent will be loaded with, as the
	// rules judge them.
	AgentOptions string
	// LoadedOnly says the caller only talks to an agent the JVM has
	// already loaded: when the JVM maps an async-profiler (a copy
	// safeattach delivered, whose bytes were judged then, or a
	// libasyncProfiler*.so another tool loaded), it is not read, hashed
	// or judged again, the inspection is what a jcmd needs, and commands
	// go to it by the name the loader knows it by (dlopen returns the
	// loaded object and opens no file). Otherwise the door opens as usual.
	LoadedOnly bool
	// Builds are async-profiler builds in order of preference (a node
	// agent's configured ones), for a door given no Lib: it loads the
	// first the rules allow for the JVM, judging each against one
	// inspection and moving past a build refused for what it is (its
	// version, what it imports: RefusedError.ByAgent); a refusal of the
	// JVM stops there. With none allowed, the preferred build's refusal
	// is the answer; with a later one loaded, Result.Picked says so. A
	// build that is not there is refused as Check refuses it, and passed
	// over. Each names a library or an install's home (none empty).
	Builds []string
	// PickAgent: when the rules refuse the agent (Lib, or the installed
	// one) for what it is and allow another async-profiler build on this
	// host (a RefusedError's Alternatives), the door loads the first of
	// those instead, logs it, and its Result says so (Picked). Without
	// it the refusal only names them.
	PickAgent bool
	// Operation names the caller's operation in the log and the audit
	// record (default "session").
	Operation string
	// Options are the attach options; Timeout bounds the opening (default
	// DefaultLoadTimeout).
	Options Options
	// sources are where alternatives are looked for (tests).
	sources agentSources
}

// OpenDoor finds the agent, inspects and judges pid (a refusal is a
// *RefusedError), delivers the judged bytes and starts the attach
// listener, all within ctx and req.Options.Timeout. A failure is audited
// here; a Door that opened is audited by its caller's Finish.
func OpenDoor(ctx context.Context, pid int, req DoorRequest) (*Door, error) {
	if err := req.Options.validate(); err != nil {
		return nil, err
	}
	if slices.Contains(req.Builds, "") {
		return nil, fmt.Errorf("%w: an empty path among the builds", ErrInvalidOptions)
	}
	op := req.Operation
	if op == "" {
		op = "session"
	}
	lib, loadedPath, loadedSum, err := chooseAgent(pid, req)
	if err != nil {
		return nil, err
	}
	c := newCall(op, pid, req.Options)
	ctx, cancel := req.Options.withDeadline(ctx, DefaultLoadTimeout)
	defer cancel()
	c.deadline, _ = ctx.Deadline()
	var picked *AgentPick
	if lib == "" {
		// The judged bytes are loaded already: judge the JVM as a jcmd
		// does (not-a-jvm, signals, socket, credentials) and talk to them.
		if err := c.judge(ctx, preflight.Options{AttachOnly: true}); err != nil {
			c.finish(err)
			return nil, err
		}
		c.agent = &preflight.Agent{Path: loadedPath, RealPath: loadedPath, SHA256: loadedSum, Kind: preflight.AgentAsyncProfiler, Exists: true, Regular: true,
			Evidence: []string{"already loaded by the JVM (the loader returns it by this name; nothing new is loaded)"}}
		c.loaded = loadedPath
	} else {
		ofBuilds := req.Lib == "" && len(req.Builds) > 0
		if err := c.readAgent(ctx, lib, req.AgentOptions, ofBuilds); err != nil {
			c.finish(err)
			return nil, err
		}
		err := c.judge(ctx, preflight.Options{})
		if err != nil && ofBuilds && len(req.Builds) > 1 {
			picked, err = c.judgeLaterBuilds(ctx, err, req.Builds[1:], req.AgentOptions)
		}
		if err != nil {
			if picked, err = c.nameAlternatives(ctx, err, req.PickAgent, req.sources); err != nil {
				c.finish(err)
				return nil, err
			}
		}
	}
	pctx, pcancel := c.protocolContext(ctx)
	defer pcancel()
	s, err := c.open(pctx)
	if err != nil {
		c.finish(err)
		return nil, err
	}
	return &Door{c: c, s: s, picked: picked}, nil
}

// chooseAgent picks what a door loads: the library to read and judge
// (lib), or the copy the JVM already maps (lib empty; its path, and its
// hash when the path names it).
func chooseAgent(pid int, req DoorRequest) (lib, loadedPath, loadedSum string, err error) {
	if req.LoadedOnly {
		if path, sum, ok := deliveredCopy(pid); ok {
			return "", path, sum, nil
		}
	}
	if req.Lib != "" {
		return req.Lib, "", "", nil
	}
	if len(req.Builds) > 0 {
		return req.Builds[0], "", "", nil
	}
	found, searched := findInstalled()
	if found != "" {
		return found, "", "", nil
	}
	// None installed, but the JVM maps one: a copy safeattach delivered
	// (its bytes were judged when loaded) is used as loaded; one loaded
	// in place from our own file system is read and judged like a
	// library given with --agent.
	path, sum, ok := deliveredCopy(pid)
	switch {
	case ok && sum != "":
		return "", path, sum, nil
	case ok && sameMountNamespace(pid):
		return path, "", "", nil
	}
	return "", "", "", noAgentError(pid, searched)
}

// deliveredCopy finds, in pid's mappings, the async-profiler it has
// loaded: a copy safeattach delivered (<dir>/.safeattach[-<hex>]/<sha256>/
// <name>, whose hash directory names its bytes), else a library named
// libasyncProfiler*.so (loaded in place, or by another tool). A door
// that only talks to the loaded profiler sends its commands to that
// name, which the JVM's loader resolves to the loaded object without
// opening a file. sum is empty when the bytes' hash is not known from
// the path.
func deliveredCopy(pid int) (path, sum string, ok bool) {
	_ = proc.FS{}.Proc(pid).WalkMaps(func(p []byte) bool {
		return bytes.Contains(p, []byte("/"+storeDir)) || bytes.Contains(p, []byte("/libasyncProfiler"))
	}, func(m *proc.Mapping) error {
		if !m.Executable() || m.Deleted {
			return nil
		}
		hashDir := filepath.Dir(m.Path)
		store := filepath.Base(filepath.Dir(hashDir))
		h := filepath.Base(hashDir)
		if (store == storeDir || strings.HasPrefix(store, storeDir+"-")) && len(h) == 64 && isHex(h) {
			path, sum, ok = m.Path, h, true
			return proc.ErrStop
		}
		if strings.HasPrefix(filepath.Base(m.Path), "libasyncProfiler") && !ok {
			path, ok = m.Path, true
		}
		return nil
	})
	return path, sum, ok
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Load sends one load of the door's agent with options. ctx bounds it
// (its deadline is also what a hang report may sample until); the
// watcher runs beside it. A timeout is a *HangError; a cancelled ctx is
// an interruption, not a hang.
func (d *Door) Load(ctx context.Context, options string) (string, error) {
	if dl, ok := ctx.Deadline(); ok {
		d.c.deadline = dl
	}
	return d.s.load(ctx, options)
}

// Healthy asks the JVM for its version, within Options.HealthTimeout.
func (d *Door) Healthy(ctx context.Context) error {
	return d.c.healthCheck(ctx, d.s.client)
}

// Report is the inspection the door was opened under.
func (d *Door) Report() *preflight.Report { return d.c.report }

// Verdict is the judgement the door was opened under.
func (d *Door) Verdict() conflicts.Verdict { return d.c.verdict }

// Agent is the agent as judged (for a LoadedOnly door, the loaded copy).
func (d *Door) Agent() *preflight.Agent { return d.c.agent }

// Logger is the door's logger (Options.Logger, or one that discards).
func (d *Door) Logger() *slog.Logger { return d.c.log }

// Result is the judgement, the agent and the path the JVM loads it from,
// and, when the agent given was refused and another picked
// (DoorRequest.PickAgent), which.
func (d *Door) Result() Result {
	return Result{PID: d.c.pid, Verdict: d.c.verdict, Agent: d.c.agent, LoadedFrom: d.s.agentPath, Picked: d.picked}
}

// Finish logs the operation's outcome and hands Options.Audit its
// record: call it once, when what the door was opened for has ended.
func (d *Door) Finish(err error) { d.c.finish(d.c.settle(err)) }

// Opened is when the door began to open: an operation's duration counts
// from it.
func (d *Door) Opened() time.Time { return d.c.start }

// Close ends the door on this side: the delivered copy is released (it
// stays in the target while the JVM maps it) and, after a load, the
// crash memory follows the JVM.
func (d *Door) Close() { d.s.close() }
