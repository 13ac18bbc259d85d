package profiling

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/safeattach/safeattach/attach"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/printable"
	"github.com/safeattach/safeattach/internal/safefile"
)

// One owner per profiler (docs/safety.md, invariant 12). A session that
// starts async-profiler in a JVM first writes a record of who it is into
// our store in the target (created with O_EXCL: of two sessions racing,
// one wins), and removes it when it stops the profiler. Another session
// finding the record refuses with who started the profiler and when,
// unless told to take over; a record whose profiler stopped by itself
// (timeout=) or no longer runs is stale and cleaned up. A profiler
// running with no record was started by another tool (asprof, a
// colleague's script): it is refused the same way.

// Owner is who runs the profiler in a JVM, as its record in the target
// says.
type Owner struct {
	// Tool names the caller: "safeattach profile", "safeattach-daemon
	// node-1", an embedding program's SessionRequest.Owner.
	Tool string `json:"tool"`
	// Action is what started it: collect, start, windows.
	Action string `json:"action"`
	// UID and PID are the caller's (in its own namespace), Host its
	// host name.
	UID  int    `json:"uid"`
	PID  int    `json:"pid"`
	Host string `json:"host,omitempty"`
	// Since is when the profiler was started; Expires when it stops by
	// itself (zero: it runs until stopped).
	Since   time.Time `json:"since"`
	Expires time.Time `json:"expires,omitzero"`
	// Detached is a start meant to be stopped by a later session (the
	// CLI's profile start … profile stop).
	Detached bool `json:"detached,omitempty"`
	// Session tells sessions apart (random).
	Session string `json:"session"`
	// What a later session needs to finish the profile: the event and
	// format, the JFR recording in the target, and the output file the
	// starter named (its own path). They are never written into the
	// target, nor taken from it: the caller keeps them (startstate.go),
	// and a record read back carries them only when this caller's own
	// state for that start does.
	Event     string `json:"-"`
	Format    string `json:"-"`
	Recording string `json:"-"`
	Output    string `json:"-"`
}

// Caps on the text fields of a record read back: the target may have
// written it (its uid 0 is root's uid without a user namespace).
const maxRecordField = 256

// clip keeps a record field short enough to be shown, and printable.
func clip(s string) string {
	if len(s) > maxRecordField {
		s = s[:maxRecordField] + "…"
	}
	return printable.Line(s)
}

func (o *Owner) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s (uid %d, pid %d", o.Tool, o.Action, o.UID, o.PID)
	if o.Host != "" {
		fmt.Fprintf(&b, " on %s", o.Host)
	}
	fmt.Fprintf(&b, ") since %s (%s ago)", o.Since.Local().Format(time.DateTime), time.Since(o.Since).Round(time.Second))
	if !o.Expires.IsZero() {
		fmt.Fprintf(&b, ", stopping by itself at %s", o.Expires.Local().Format(time.TimeOnly))
	}
	return b.String()
}

// expired reports whether the profiler stopped by itself by now (a
// grace period covers clocks and the agent's own timer).
func (o *Owner) expired(now time.Time) bool {
	return !o.Expires.IsZero() && now.After(o.Expires.Add(5*time.Second))
}

// BusyError is a refusal to disturb a profiler someone else runs.
type BusyError struct {
	PID int
	// Owner is the running profiler's record; nil when another tool
	// started it (Status is then what the agent said about it, escaped
	// as LastLog is).
	Owner  *Owner
	Status string
	// OtherUser: the record is in another user's store (a detached
	// start by another user, whose output and recording only that user
	// knows).
	OtherUser bool
}

func (e *BusyError) Error() string {
	who := "another tool (no safeattach session owns it)"
	if e.Owner != nil {
		who = e.Owner.String()
	}
	s := fmt.Sprintf("pid %d: the profiler is running, started by %s", e.PID, who)
	if e.Status != "" {
		s += "; the agent says: " + e.Status
	}
	if e.OtherUser && e.Owner != nil {
		return s + fmt.Sprintf("; it is another user's start: where it writes and its recording are known to that user only — stop it as uid %d, or take it over (--takeover: its recording is discarded)", e.Owner.UID)
	}
	if e.Owner != nil && e.Owner.Detached {
		return s + fmt.Sprintf("; stop it with `safeattach profile stop %d` or take it over (--takeover)", e.PID)
	}
	return s + "; leave it, or take it over (--takeover) to stop it"
}

func (e *BusyError) Unwrap() error { return attach.ErrProfilerBusy }

// maxRecord caps a record read back: a few hundred bytes are written.
const maxRecord = 64 << 10

// recordName is the record's file name in a store: one per JVM (its pid
// in its own namespace and its start time, so that a restarted JVM with
// the same pid never inherits a record).
func (ss *Session) recordName() string {
	pr := ss.door.Report().Process
	return fmt.Sprintf("profiler-%d-%d.json", pr.NSPid, pr.StartTime)
}

// stores opens our stores in the target (attach.Door.Stores).
func (ss *Session) stores(ctx context.Context, create bool) ([]*os.File, error) {
	return ss.door.Stores(ctx, create)
}

// readRecord returns the JVM's profiler record and the store holding it,
// or nil when there is none. stores are the caller's.
func (ss *Session) readRecord(stores []*os.File) (*Owner, *os.File) {
	for _, s := range stores {
		fd, st, err := openRecord(int(s.Fd()), ss.recordName())
		if err != nil {
			continue
		}
		if st.Uid != uint32(os.Geteuid()) || st.Size > maxRecord {
			unix.Close(fd)
			continue
		}
		o := decodeRecord(fd, st.Size)
		unix.Close(fd)
		if o == nil {
			// Unreadable: a torn write, or a target's uid 0 writing
			// nonsense. Treat as stale: at worst a profile is refused
			// by the agent's own "already started".
			return &Owner{Session: "unreadable"}, s
		}
		// What finishes a start comes from this caller's own state only.
		if st := loadStartState(ss.door.Report(), o.Session); st != nil {
			o.Event, o.Format, o.Recording, o.Output = st.Event, st.Format, st.Recording, st.Output
		}
		return o, s
	}
	return nil, nil
}

// openRecord opens the record name under dir — a regular file, not
// followed if a link — and stats it.
func openRecord(dir int, name string) (int, unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := safefile.OpenRegularAt(dir, name)
	if err == nil {
		if err = unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
		}
	}
	return fd, st, err
}

// decodeRecord reads a record of size bytes (at most maxRecord) from fd
// as the hostile input it is: nil when it is none (torn, nonsense, no
// session); what it says is shown, never acted on, so its text fields
// are clipped and printable.
func decodeRecord(fd int, size int64) *Owner {
	data, err := safefile.ReadAll(safefile.FD(fd), size, maxRecord)
	var o Owner
	if err != nil || json.Unmarshal(data, &o) != nil || o.Session == "" {
		return nil
	}
	o.Tool, o.Action, o.Host, o.Session = clip(o.Tool), clip(o.Action), clip(o.Host), clip(o.Session)
	return &o
}

// foreignRecord returns the JVM's profiler record from a store another
// user owns (root's, for a user who is not), nil when there is none. It
// is read as the hostile input it is — it can only make a stop refused —
// and never written.
func (ss *Session) foreignRecord(ctx context.Context) *Owner {
	stores := ss.door.ForeignStores(ctx)
	defer closeAll(stores)
	for _, store := range stores {
		if o := readForeign(int(store.Fd()), ss.recordName()); o != nil {
			return o
		}
	}
	return nil
}

// readForeign reads record from a store another user owns.
func readForeign(store int, record string) *Owner {
	fd, st, err := openRecord(store, record)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	if st.Size > maxRecord {
		return nil
	}
	return decodeRecord(fd, st.Size)
}

// writeRecord creates the record in store, never over another: false
// when one exists already (another session won the race).
func writeRecord(store *os.File, name string, o *Owner) (bool, error) {
	err := putRecord(store, name, o, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) {
		return false, nil
	}
	return err == nil, err
}

// updateRecord replaces our record at once: a reader sees the old one or
// the new one, never a part.
func updateRecord(store *os.File, name string, o *Owner) error {
	return putRecord(store, name, o, 0)
}

// putRecord writes o to a fresh temporary file in store (0644) and
// renames it to name with flags.
func putRecord(store *os.File, name string, o *Owner, flags uint) error {
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	dir := int(store.Fd())
	tmp := ".tmp-" + randomHex(8)
	// 0644: another user must be able to see that a profiler runs and
	// whose it is (it is refused rather than finishing our start); the
	// record holds nothing the target does not know.
	fd, err := unix.Openat(dir, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("owner record: %w", err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	_ = f.Chmod(0o644) // whatever our umask
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat2(dir, tmp, dir, name, flags)
	}
	if err != nil {
		unix.Unlinkat(dir, tmp, 0)
		if errors.Is(err, unix.EEXIST) {
			return err
		}
		return fmt.Errorf("owner record: %w", err)
	}
	return nil
}

// removeRecordIf removes the record name from store if it is still the
// given session's (or unreadable).
func removeRecordIf(store *os.File, name, session string) {
	dir := int(store.Fd())
	fd, err := safefile.OpenRegularAt(dir, name)
	if err != nil {
		return
	}
	o := decodeRecord(fd, 0)
	unix.Close(fd)
	if o == nil || o.Session == session {
		unix.Unlinkat(dir, name, 0)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newOwner describes this session for its record.
func (ss *Session) newOwner(action string) *Owner {
	host, _ := os.Hostname()
	tool := ss.req.Owner
	if tool == "" {
		tool = "safeattach"
	}
	if ss.action != "" && action == "start" {
		action = ss.action
	}
	o := &Owner{
		Tool: tool, Action: action, UID: os.Geteuid(), PID: os.Getpid(), Host: host,
		Since: time.Now().UTC().Truncate(time.Second), Detached: ss.req.Detached, Session: ss.id,
		Event: ss.Event(), Format: ss.Format(), Output: ss.req.Output,
	}
	if ss.req.AutoStop > 0 {
		o.Expires = o.Since.Add(ss.req.AutoStop)
	}
	switch {
	case isJFR(ss.format):
		o.Recording = newTargetFile("rec", ".jfr")
	case ss.keepLast:
		o.Recording = newTargetFile("out", extensionFor(ss.format))
	}
	return o
}

// removeInTarget removes a file we named in the target's /tmp.
func (ss *Session) removeInTarget(ctx context.Context, name string) {
	if !strings.HasPrefix(filepath.Base(name), ".safeattach-") {
		return // only names we made
	}
	if base, ok := ss.inTmp(name); ok {
		ss.tmp.Remove(base)
		return
	}
	safefile.RemoveIn(context.WithoutCancel(ctx), ss.door.Report().Process.Root, name)
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
