package crashmem

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/preflight"
)

// Entry is one recorded crash.
type Entry struct {
	Workload string `json:"workload"`
	// Scope is the workload's (Workload's scope): each keeps at most
	// maxPerScope entries, so that one tenant's crashes cannot push
	// another's out.
	Scope       string    `json:"scope,omitempty"`
	PID         int       `json:"pid"`
	Time        time.Time `json:"time"`
	Agent       string    `json:"agent,omitempty"`
	AgentSHA256 string    `json:"agent_sha256,omitempty"`
	// Evidence is what shows the crash, e.g. the hs_err file's path and
	// its first lines.
	Evidence string `json:"evidence"`
}

// Store is a JSON file of entries, written atomically (temporary file and
// rename), mode 0600, at most maxEntries (the oldest are dropped).
type Store struct {
	path string
	mu   sync.Mutex
}

// The store's bounds. Its entries' words are a tenant's (the executable
// and main class it runs, its crash log's first lines): each is cut, and
// each scope keeps its own share, so that one scope cannot fill the file
// past what load reads (every lookup would then fail, for every scope).
const (
	maxEntries     = 1000
	maxPerScope    = 50
	maxStoreSize   = 4 << 20
	maxEvidence    = 2 << 10
	maxWorkloadKey = 512
)

// Open returns the store at path; the file is created on first Record.
func Open(path string) *Store { return &Store{path: path} }

func (s *Store) load() ([]Entry, error) {
	f, err := safefile.Read(context.Background(), s.path, maxStoreSize, safefile.Options{NoFollow: true})
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var es []Entry
	if err := json.Unmarshal(f.Data, &es); err != nil {
		return nil, fmt.Errorf("%s: %w", s.path, err)
	}
	return es, nil
}

func (s *Store) save(es []Entry) error {
	sort.Slice(es, func(a, b int) bool { return es[a].Time.Before(es[b].Time) })
	// Newest first, each scope's share kept: older entries past it go.
	perScope := map[string]int{}
	kept := make([]Entry, 0, len(es))
	for i := len(es) - 1; i >= 0; i-- {
		if perScope[es[i].Scope]++; perScope[es[i].Scope] <= maxPerScope {
			kept = append(kept, es[i])
		}
	}
	slices.Reverse(kept)
	es = kept
	if len(es) > maxEntries {
		es = es[len(es)-maxEntries:]
	}
	data, err := json.MarshalIndent(es, "", "  ")
	for err == nil && len(data) > maxStoreSize && len(es) > 0 {
		es = es[1:] // not expected with the cuts above: the oldest go
		data, err = json.MarshalIndent(es, "", "  ")
	}
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), "."+filepath.Base(s.path)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// Record adds an entry, its evidence cut to maxEvidence bytes.
func (s *Store) Record(e Entry) error {
	if len(e.Evidence) > maxEvidence {
		e.Evidence = e.Evidence[:maxEvidence] + "…"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	es, err := s.load()
	if err != nil {
		return err
	}
	return s.save(append(es, e))
}

// Lookup returns the latest entry for workload, or nil.
func (s *Store) Lookup(workload string) (*Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	es, err := s.load()
	if err != nil {
		return nil, err
	}
	for i := len(es) - 1; i >= 0; i-- {
		if es[i].Workload == workload {
			return &es[i], nil
		}
	}
	return nil, nil
}

// Forget removes every entry for workload (an operator decided the cause
// is gone).
func (s *Store) Forget(workload string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	es, err := s.load()
	if err != nil {
		return err
	}
	kept := es[:0]
	for _, e := range es {
		if e.Workload != workload {
			kept = append(kept, e)
		}
	}
	return s.save(kept)
}

// Workload names what a JVM runs, so that its next incarnation (a new
// pid after a restart) is recognised: the user, the executable and the
// main class or jar, within scope (empty: the host's). A node agent
// scopes by the pod's namespace: the same image in another team's
// namespace is another workload, so that one team's crash is neither
// shown to another nor held against it (a tenant can make its own JVM
// exit leaving a crash log at will).
func Workload(r *preflight.Report, scope string) string {
	w := fmt.Sprintf("uid=%d exe=%s main=%s", r.Process.UID.Effective, r.Process.Exe, r.JVM.MainClass)
	if scope != "" {
		w = "scope=" + scope + " " + w
	}
	if len(w) > maxWorkloadKey {
		// The same workload, the same key: a long one is cut and
		// told apart from others with its start by its digest.
		sum := sha256.Sum256([]byte(w))
		w = w[:maxWorkloadKey-72] + " sha256=" + hex.EncodeToString(sum[:])
	}
	return w
}

// Watch follows the JVM r describes for at most window after an attach.
// If it exits within the window leaving hs_err_pid<pid>.log in its
// working directory or /tmp (the HotSpot crash log), the crash is
// recorded for its workload and returned. It holds a pidfd and the two
// directories open (they stay valid after the process is gone) and sends
// the process nothing.
func Watch(ctx context.Context, store *Store, r *preflight.Report, agent *preflight.Agent, scope string, window time.Duration) (*Entry, error) {
	pidfd, err := unix.PidfdOpen(r.PID, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pidfd)
	procDir := filepath.Dir(r.Process.Root)
	// The crash log is the target's file: its directories are resolved
	// inside its root (the working directory is the process's own).
	var dirs []int
	for _, where := range [][2]string{{filepath.Join(procDir, "cwd"), "."}, {r.Process.Root, "/tmp"}} {
		if d, err := safefile.OpenDirIn(ctx, where[0], where[1]); err == nil {
			dirs = append(dirs, d.FD())
			defer d.Close()
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(procDir, &st); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(window)
	for {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return nil, nil
		}
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(min(left, time.Second)/time.Millisecond)+1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return nil, err
		}
		if n > 0 {
			break
		}
	}
	name := fmt.Sprintf("hs_err_pid%d.log", r.Process.NSPid)
	for _, d := range dirs {
		fd, err := unix.Openat(d, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		head := make([]byte, 2048)
		k, _ := unix.Read(fd, head)
		unix.Close(fd)
		e := Entry{Workload: Workload(r, scope), Scope: scope, PID: r.PID, Time: time.Now().UTC(), Evidence: name + ": " + firstLines(string(head[:max(k, 0)]), 6)}
		if agent != nil {
			e.Agent, e.AgentSHA256 = agent.Path, agent.SHA256
		}
		return &e, store.Record(e)
	}
	return nil, nil // exited without a crash log: a normal exit or a kill
}

func firstLines(s string, n int) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(l, "#"))
		if l != "" {
			out = append(out, l)
		}
		if len(out) == n {
			break
		}
	}
	return strings.Join(out, " | ")
}
