package attach

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/preflight"
)

// The safe build that is already installed: when the rules refuse an
// async-profiler build for what it is (its version, what it imports, its
// file), another build on this host may be allowed for the same JVM. A
// refusal names the builds the rules allow (RefusedError.Alternatives);
// a door asked to (DoorRequest.PickAgent) loads the first of them
// instead, and says so (Result.Picked, and the log).

// Alternative is an async-profiler build on this host that the rules
// allow for a JVM that refused the one given.
type Alternative struct {
	Path    string `json:"path"`
	Version string `json:"version,omitempty"`
	SHA256  string `json:"sha256,omitempty"`
	// Found says where agent discovery found it: "$ASYNC_PROFILER_HOME",
	// "beside <asprof>", "mapped by pid N", or "" for an install location
	// (async-profiler*/ under /opt, /usr/local, /usr/lib, /usr/share, ~).
	Found string `json:"found,omitempty"`
}

// String is "async-profiler 4.5 at <path>".
func (a Alternative) String() string {
	v := "of an unknown version"
	if a.Version != "" {
		v = a.Version
	}
	return fmt.Sprintf("async-profiler %s at %s", v, a.Path)
}

// AgentPick records a door that loaded another build than the one it was
// given (or found installed), because the rules refused that one here
// and allowed this one (DoorRequest.PickAgent, or a later one of
// DoorRequest.Builds).
type AgentPick struct {
	// Refused is the build the rules refused, Rules the rules that
	// refused it.
	Refused Alternative `json:"refused"`
	Rules   []string    `json:"rules"`
	// Picked is the build loaded instead, as read and judged.
	Picked Alternative `json:"picked"`
}

// String is the sentence a caller prints: "async-profiler 3.0 at A was
// refused here (rules tcmalloc-heap-profiler); using async-profiler 4.5
// at B".
func (p *AgentPick) String() string {
	return fmt.Sprintf("%s was refused here (rules %s); using %s", p.Refused, strings.Join(p.Rules, ", "), p.Picked)
}

// AlternativeOf describes the agent a as an Alternative found as found.
func AlternativeOf(a *preflight.Agent, found string) Alternative {
	return Alternative{Path: a.Path, Version: a.Version, SHA256: a.SHA256, Found: found}
}

// ByAgent reports whether the refusal is the rules' judgement of the
// agent: every rule that refused it looked at the agent (its version,
// what it imports, its file, the allow and deny lists). Another build
// might then be allowed; a refusal for the JVM alone (not a JVM, attach
// disabled) refuses every build.
func (e *RefusedError) ByAgent() bool {
	return e.Reason == "" && refusedByAgent(e.Verdict)
}

func refusedByAgent(v conflicts.Verdict) bool {
	blocking := 0
	for _, f := range v.Findings {
		if f.Severity != conflicts.Block {
			continue
		}
		blocking++
		if f.Rule == conflicts.RuleAgentDenylisted || f.Rule == conflicts.RuleAgentNotAllowlisted {
			continue
		}
		uses := false
		for _, e := range f.Evidence {
			if strings.HasPrefix(e, "agent.") {
				uses = true
				break
			}
		}
		if !uses {
			return false
		}
	}
	return blocking > 0
}

// Bounds of the search for alternatives: the builds judged, and the
// other processes' memory maps read (processes, bytes of one, bytes in
// all). Each is cheap (an ELF read, a text scan); together they keep a
// refusal on a host with thousands of processes within a second or so.
const (
	maxAlternativeCandidates = 16
	maxMapsProcesses         = 4096
	maxMapsBytes             = 4 << 20
	maxMapsTotal             = 64 << 20
)

// agentSources say where candidates are looked for. The zero value is
// agent discovery's places and the libraries other processes map; tests
// put their own first.
type agentSources struct {
	// first are libraries or install directories looked at before
	// discovery's places.
	first []string
	// noDiscovery and noMaps leave out discovery's places and the
	// libraries other processes map.
	noDiscovery, noMaps bool
}

// agentCandidates lists every async-profiler library a caller could use
// here: what agent discovery can find (every one, not only the first),
// then the libasyncProfiler*.so other processes in our mount namespace
// map, de-duplicated by real path. Only regular files are listed.
func agentCandidates(ctx context.Context, src agentSources) []agentCandidate {
	var all []agentCandidate
	for _, p := range src.first {
		all = append(all, agentCandidate{installLibrary(p), "given"})
	}
	if !src.noDiscovery {
		found, _ := discoveryCandidates()
		all = append(all, found...)
	}
	if !src.noMaps {
		all = append(all, mappedAgents(ctx)...)
	}
	seen := map[string]bool{}
	var out []agentCandidate
	for _, c := range all {
		p := filepath.Clean(c.path)
		if !isRegular(p) {
			continue
		}
		// Found, not given: named or loaded by root only if no one but
		// root (or us) could have put it there or can change it — a build
		// another user's process maps, or one under a directory someone
		// else can write, is that user's choice of code.
		if c.how != "given" && !trustedPath(p) {
			continue
		}
		real := p
		if r, err := filepath.EvalSymlinks(p); err == nil {
			real = r
		}
		if seen[real] {
			continue
		}
		seen[real] = true
		out = append(out, agentCandidate{p, c.how})
	}
	return out
}

// trustedPath reports whether the file at path, and every directory
// above it (links resolved), is owned by root or by us and writable by
// no one else. A sticky directory writable by all (/tmp) is fine above
// the file: others cannot rename or remove entries they do not own.
func trustedPath(path string) bool {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return false
	}
	me := uint32(os.Geteuid())
	for p := real; ; p = filepath.Dir(p) {
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || st.Uid != 0 && st.Uid != me {
			return false
		}
		sticky := st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Mode&unix.S_ISVTX != 0
		if st.Mode&0o022 != 0 && !(sticky && p != real) {
			return false
		}
		if p == "/" {
			return true
		}
	}
}

// mappedAgents are the async-profiler libraries other processes map
// executable (libasyncProfiler*.so, not deleted), for those processes in
// our own mount namespace only: the path in another one's maps names a
// file of its file system, not ours. At most maxMapsProcesses processes
// are read, each's maps up to maxMapsBytes and all up to maxMapsTotal;
// a process that cannot be read is skipped.
func mappedAgents(ctx context.Context) []agentCandidate {
	fs := proc.FS{}
	ours, err := fs.Self().Namespace("mnt")
	if err != nil {
		return nil
	}
	pids, err := fs.PIDs()
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []agentCandidate
	left := int64(maxMapsTotal)
	for i, pid := range pids {
		if i >= maxMapsProcesses || left <= 0 || ctx.Err() != nil {
			break
		}
		if pid == self {
			continue
		}
		p := fs.Proc(pid)
		if ns, err := p.Namespace("mnt"); err != nil || ns != ours {
			continue
		}
		f, err := os.Open(p.Path("maps"))
		if err != nil {
			continue
		}
		r := &io.LimitedReader{R: f, N: min(maxMapsBytes, left)}
		// A maps file cut short by the bound ends in a broken line: the
		// mappings before it count, the error does not.
		_ = proc.ScanMaps(r, func(path []byte) bool {
			return bytes.Contains(path, []byte("/libasyncProfiler"))
		}, func(m *proc.Mapping) error {
			base := filepath.Base(m.Path)
			if m.Executable() && !m.Deleted && strings.HasPrefix(base, "libasyncProfiler") && strings.Contains(base, ".so") {
				out = append(out, agentCandidate{m.Path, fmt.Sprintf("mapped by pid %d", pid)})
			}
			return nil
		})
		f.Close()
		left -= min(maxMapsBytes, left) - r.N
	}
	return out
}

// alternatives are the other async-profiler builds the rules allow for
// report where agent was refused with verdict: each candidate is read
// (an ELF inspection: nothing is sent to the target) and judged with the
// same report and policy. Nothing is looked for unless the agent is an
// async-profiler build and the refusal the rules' judgement of it.
func alternatives(ctx context.Context, report *preflight.Report, agent *preflight.Agent, verdict conflicts.Verdict, policy conflicts.Policy, src agentSources) []Alternative {
	if report == nil || agent == nil || agent.Assumed || agent.Kind != preflight.AgentAsyncProfiler || verdict.Allowed || !refusedByAgent(verdict) {
		return nil
	}
	var out []Alternative
	judged := 0
	for _, c := range agentCandidates(ctx, src) {
		if judged >= maxAlternativeCandidates || ctx.Err() != nil {
			break
		}
		if c.path == agent.Path || c.path == agent.RealPath {
			continue
		}
		judged++
		a, err := preflight.InspectAgent(ctx, c.path)
		if err != nil || !a.Exists || a.Error != "" || a.Kind != preflight.AgentAsyncProfiler || a.SHA256 == agent.SHA256 {
			continue
		}
		a.Options = agent.Options
		preflight.CheckLoadable(ctx, report, a)
		if conflicts.Evaluate(report, a, policy).Allowed {
			out = append(out, AlternativeOf(a, c.how))
		}
	}
	return out
}

// nameAlternatives puts on a refusal by the rules (err) the other builds
// they allow; with pick, the first of them is read and judged instead
// and the pick is returned. Any other error is returned as it is.
func (c *call) nameAlternatives(ctx context.Context, err error, pick bool, src agentSources) (*AgentPick, error) {
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Reason != "" || c.agent == nil {
		return nil, err
	}
	policy, perr := c.opts.Policy(ctx)
	if perr != nil {
		return nil, err
	}
	refused.Alternatives = alternatives(ctx, c.report, c.agent, c.verdict, policy, src)
	if len(refused.Alternatives) == 0 {
		return nil, err
	}
	alt := refused.Alternatives[0]
	if !pick {
		c.log.Info("safeattach: another async-profiler build is allowed here", "pid", c.pid, "refused", c.agent.Path, "allowed", alt.Path, "version", alt.Version)
		return nil, err
	}
	p := &AgentPick{Refused: AlternativeOf(c.agent, ""), Rules: refused.Verdict.Causes(), Picked: alt}
	c.log.Warn("safeattach: the agent is refused here; loading another build the rules allow (PickAgent)", "pid", c.pid,
		"refused", c.agent.Path, "refused_version", c.agent.Version, "rules", p.Rules, "picked", alt.Path, "picked_version", alt.Version)
	if err := c.readAgent(ctx, alt.Path, c.agent.Options, false); err != nil {
		return nil, err
	}
	// Judged again from the start, with the bytes just read: those are
	// what is delivered.
	if err := c.judge(ctx, preflight.Options{}); err != nil {
		return nil, err
	}
	p.Picked = AlternativeOf(c.agent, alt.Found)
	c.passedOver = append(c.passedOver, passedOver(p.Refused.Path, p.Rules))
	return p, nil
}
