package profiling

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/preflight"
)

// What a detached start must remember for the stop — the output the
// starter named, the format, the recording in the target — is kept on
// the caller's side, never in the target (docs/safety.md, invariant 12):
// inside a container without a user namespace the pod's user is uid 0,
// and a record there that says where root should write is the pod's
// word. The record in the target is only the lock that says a profiler
// runs, read as hostile input.
//
// The state lives in a directory only the caller's user can use: for
// root /run/safeattach/starts, for anyone else $XDG_RUNTIME_DIR (or the
// user cache directory) /safeattach/starts, each directory checked to be
// a real directory of ours that no one else can write. A file is named
// by the target's identity: its host pid, start time and pid and mount
// namespaces, so a restarted JVM with the same pid never finds another
// JVM's start.

// startState is one detached start, as its starter left it.
type startState struct {
	// Engine is the profiler started (empty: async-profiler); Session the
	// session's id, or for the Flight Recorder the recording's name.
	Engine  Engine `json:"engine,omitempty"`
	Session string `json:"session"`
	// Detached: a start meant to be finished by a later session (not a
	// collect's or a window loop's own).
	Detached  bool   `json:"detached,omitempty"`
	Event     string `json:"event,omitempty"`
	Format    string `json:"format,omitempty"`
	Recording string `json:"recording,omitempty"`
	Output    string `json:"output,omitempty"`
}

func stateOf(o *Owner) *startState {
	return &startState{Session: o.Session, Detached: o.Detached, Event: o.Event, Format: o.Format, Recording: o.Recording, Output: o.Output}
}

// maxStartState caps a state file read back (it is ours, but a file of
// a few hundred bytes needs no more).
const maxStartState = 16 << 10

// startStateDir returns the caller's state directory, created if
// needed: owned by us, mode 0700, not a link at any step we create.
func startStateDir() (string, error) {
	var base string
	switch {
	case os.Geteuid() == 0:
		base = "/run/safeattach"
	case os.Getenv("XDG_RUNTIME_DIR") != "":
		base = filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "safeattach")
	default:
		d, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("no directory of ours for a detached start's state: %w", err)
		}
		base = filepath.Join(d, "safeattach")
	}
	dir := filepath.Join(base, "starts")
	// The parent is the system's or the user's own (~/.cache may not
	// exist yet for a service account); ours start at base.
	if err := os.MkdirAll(filepath.Dir(base), 0o700); err != nil {
		return "", fmt.Errorf("a detached start's state: %w", err)
	}
	for _, d := range []string{base, dir} {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("a detached start's state: %w", err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(d, &st); err != nil {
			return "", err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != uint32(os.Geteuid()) || st.Mode&0o077 != 0 {
			return "", fmt.Errorf("a detached start's state: %s is not a private directory of ours (uid %d, mode %04o)", d, st.Uid, st.Mode&0o7777)
		}
	}
	return dir, nil
}

// startStateName names the state of the JVM r describes for engine:
// each engine keeps its own, as both may run in one JVM.
func startStateName(r *preflight.Report, engine Engine) string {
	p := r.Process
	suffix := ".json"
	if engine == FlightRecorder {
		suffix = ".jfr.json"
	}
	return fmt.Sprintf("%d-%d-%d-%d%s", r.PID, p.StartTime, p.PIDNamespace.Inode, p.MountNamespace.Inode, suffix)
}

// saveStartState keeps st for the JVM r describes, replacing any older
// one at once (a reader sees the old or the new).
func saveStartState(r *preflight.Report, st *startState) error {
	dir, err := startStateDir()
	if err != nil {
		return err
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return fmt.Errorf("a detached start's state: %w", err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, startStateName(r, st.Engine)))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("a detached start's state: %w", err)
	}
	return nil
}

// pruneStartStates removes the states of JVMs that are gone (no process
// of that pid and start time): a JVM that exited or restarted leaves its
// start's state behind. At most maxStartStates names are looked at. It
// runs when a session takes a profiler, not at every window's renewal.
func pruneStartStates() {
	dir, err := startStateDir()
	if err != nil {
		return
	}
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(maxStartStates)
	d.Close()
	for _, n := range names {
		var pid int
		var start uint64
		if _, err := fmt.Sscanf(n, "%d-%d-", &pid, &start); err != nil {
			continue
		}
		if st, err := (proc.FS{}).Proc(pid).Stat(); err == nil && st.StartTime == start {
			continue
		}
		os.Remove(filepath.Join(dir, n))
	}
}

// maxStartStates bounds the state files looked at when pruning.
const maxStartStates = 4096

// loadStartState returns the state a start of session left for the JVM
// r describes, nil when there is none (another caller's start, or one
// that kept no state).
func loadStartState(r *preflight.Report, session string) *startState {
	st := readStartState(r, AsyncProfiler)
	if st == nil || st.Session != session {
		return nil
	}
	return st
}

// readStartState returns engine's state for the JVM r describes,
// whatever session left it; nil when there is none.
func readStartState(r *preflight.Report, engine Engine) *startState {
	dir, err := startStateDir()
	if err != nil {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(dir, startStateName(r, engine)), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	data, err := safefile.ReadAll(safefile.FD(int(f.Fd())), fi.Size(), maxStartState)
	var st startState
	if err != nil || json.Unmarshal(data, &st) != nil || st.Session == "" {
		return nil
	}
	if st.Engine == "" {
		st.Engine = AsyncProfiler
	}
	if st.Engine != engine {
		return nil
	}
	return &st
}

// dropStartState removes the JVM's state if it is session's.
func dropStartState(r *preflight.Report, session string) {
	dropEngineState(r, AsyncProfiler, session)
}

// dropEngineState removes engine's state for the JVM if it is session's.
func dropEngineState(r *preflight.Report, engine Engine, session string) {
	if st := readStartState(r, engine); st == nil || st.Session != session {
		return
	}
	if dir, err := startStateDir(); err == nil {
		os.Remove(filepath.Join(dir, startStateName(r, engine)))
	}
}
