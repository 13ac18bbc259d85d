package fdtransfer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/internal/safefile"
)

// The messages, as async-profiler's src/fdtransfer.h lays them out in
// the target's native byte order:
//
//	struct fd_request       { u32 type; }
//	struct perf_fd_request  { fd_request header; i32 tid; i32 target_cpu;
//	                          perf_event_attr attr;   // at 16: 8-aligned
//	                          char probe_name[256]; } // at 16 + attr.size
//	struct fd_response      { u32 type; i32 error; }  // error: errno or 0
//	struct perf_fd_response { fd_response header; i32 tid; }
//
// attr.size (the u32 at 20) is the agent's sizeof(perf_event_attr): 128
// or 136 with the headers async-profiler is built against.
const (
	requestPerfFD     = 0
	requestKallsymsFD = 1

	attrOffset    = 16
	maxProbeName  = 256
	minAttrSize   = 64  // PERF_ATTR_SIZE_VER0
	maxAttrSize   = 512 // the kernel accepts up to a page; no agent sends more
	fullAttrSize  = 136 // PERF_ATTR_SIZE_VER8: every field the policy reads
	config1Offset = 56  // perf_event_attr.config1 (kprobe/uprobe name pointer)
	maxRequest    = 1024

	maxKallsyms = 256 << 20
	// maxMapped bounds the perf buffers kept mapped on the agent's
	// behalf (asprof keeps a ring of as many).
	maxMapped = 1024
	// MaxDescriptors bounds the perf events the target holds through
	// the server, counted when it connects (what it kept from earlier
	// starts included): each holds a ring buffer the server mapped
	// (pinned kernel pages that neither the target's cgroup nor its
	// mlock limit sees), so the target's own thread count is not bound
	// enough. async-profiler asks once per thread; a JVM with more
	// threads than this has the rest refused (EPERM) and profiles the
	// first ones.
	MaxDescriptors = 4096
	// requestRate and requestBurst cap how fast requests are answered:
	// a JVM's threads all ask at the profiler's start (the burst), and a
	// new thread asks as it starts; more waits.
	requestRate  = 1000 // per second
	requestBurst = 4096
	// A request for an unknown thread looks for threads started since
	// (the status of a new id is read once), at most once per
	// tidNewScan and never more often than 1/listingShare of the time:
	// a request waits for its turn. Listing the task directory of a
	// namespaced target costs the kernel ~5 ms at 4,000 threads, a
	// fraction of that at a JVM's usual hundreds, so the pause adapts to
	// what the last listing cost: 3–3.5 % of a core measured at 4,000
	// threads whatever the agent asks (TestHostileUnknownThreads), and a
	// thread that has just started waits ~10 ms for its event (~200 ms
	// at 4,000).
	tidNewScan   = 10 * time.Millisecond
	listingShare = 40
)

// AcceptTimeout is how long Serve waits for the agent to connect.
const AcceptTimeout = 30 * time.Second

// Stats counts what a server did, for logs and tests.
type Stats struct {
	PerfFDs   int64 `json:"perf_fds"`  // perf event descriptors sent
	Kallsyms  int64 `json:"kallsyms"`  // kallsyms copies sent
	Refused   int64 `json:"refused"`   // requests answered with an error (ESRCH for a foreign thread, EACCES for what the policy does not allow, perf_event_open's errno)
	Denied    int64 `json:"denied"`    // of Refused, those the policy refused (EACCES, EPERM)
	Strangers int64 `json:"strangers"` // connections from another process, turned away
	// TIDScans counts the listings of the target's threads, for tests
	// of what a miss costs.
	TIDScans int64 `json:"tid_scans"`
}

// Server answers one agent's descriptor requests.
type Server struct {
	pid  int
	name string
	lfd  int
	// pidfd is the target as it was when the socket was made in its
	// network namespace: it turns readable when that process exits, so a
	// later process given the same pid is never served.
	pidfd int

	policy *compiledPolicy

	mu     sync.Mutex
	closed bool
	// tids maps the target's thread ids (its pid namespace) to ours;
	// scanAt is when it was last searched for new threads.
	tids   map[int32]int
	known  map[int]bool // the host ids in tids
	scanAt time.Time
	// scanCost is what the last listing cost (the directory read alone).
	scanCost time.Duration
	dents    []byte
	mapped   [][]byte
	next     int

	perfFDs, kallsyms, refused, denied, strangers, tidScans atomic.Int64
}

// Listen creates the server's socket in pid's network namespace, under a
// name no one else can guess and that tells nothing of the host
// (@safeattach-<128 random bits>: a host pid would show the pod the
// host's numbering); the agent is given it as fdtransfer=NAME. The
// server serves what policy allows, nothing else.
func Listen(pid int, policy Policy) (*Server, error) {
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, err
	}
	return ListenAs(pid, "@safeattach-"+hex.EncodeToString(r[:]), policy)
}

// ListenAs is Listen with a given name ("@..." for the abstract
// namespace, which is what crosses a container's mount namespace).
func ListenAs(pid int, name string, policy Policy) (*Server, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("fdtransfer: pid %d", pid)
	}
	cp, err := compile(policy)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(name, "@") || len(name) > 100 {
		return nil, fmt.Errorf("fdtransfer: socket name %q: want @ and at most 100 bytes", name)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("fdtransfer: pid %d: %w", pid, err)
	}
	fd, err := socketIn(pid)
	if err == nil && exited(pidfd) {
		// The namespace entered may be a newer process's of that pid.
		unix.Close(fd)
		err = ErrTargetExited
	}
	if err == nil {
		if err = unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
			err = fmt.Errorf("fdtransfer: bind %s: %w", name, err)
		} else if err = unix.Listen(fd, 4); err != nil {
			err = fmt.Errorf("fdtransfer: listen: %w", err)
		}
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		unix.Close(pidfd)
		return nil, err
	}
	return &Server{pid: pid, name: name, lfd: fd, pidfd: pidfd, policy: cp, tids: map[int32]int{}, known: map[int]bool{}}, nil
}

// exited reports whether the process a pidfd names has exited.
func exited(pidfd int) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	n, _ := unix.Poll(fds, 0)
	return n > 0
}

// socketIn creates a socket in pid's network namespace: the namespace of
// an abstract unix socket is the one it is created in. The switch is made
// on a thread of its own, switched back before it is released; a thread
// that cannot be switched back is never reused (it stays locked, and the
// runtime ends it with its goroutine).
func socketIn(pid int) (int, error) {
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		fd, restored, err := func() (int, bool, error) {
			self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return -1, true, fmt.Errorf("fdtransfer: our network namespace: %w", err)
			}
			defer unix.Close(self)
			target, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return -1, true, fmt.Errorf("fdtransfer: pid %d's network namespace: %w", pid, err)
			}
			defer unix.Close(target)
			var a, b unix.Stat_t
			same := unix.Fstat(self, &a) == nil && unix.Fstat(target, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino
			if !same {
				if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
					return -1, true, fmt.Errorf("fdtransfer: entering pid %d's network namespace: %w", pid, err)
				}
			}
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
			if !same && unix.Setns(self, unix.CLONE_NEWNET) != nil {
				return fd, false, err
			}
			if err != nil {
				return -1, true, fmt.Errorf("fdtransfer: socket: %w", err)
			}
			return fd, true, nil
		}()
		if restored {
			runtime.UnlockOSThread()
		}
		done <- result{fd, err}
	}()
	r := <-done
	return r.fd, r.err
}

// Name is the socket's name, for the agent's fdtransfer= option.
func (s *Server) Name() string { return s.name }

// Stats returns what the server did so far.
func (s *Server) Stats() Stats {
	return Stats{PerfFDs: s.perfFDs.Load(), Kallsyms: s.kallsyms.Load(), Refused: s.refused.Load(), Denied: s.denied.Load(),
		Strangers: s.strangers.Load(), TIDScans: s.tidScans.Load()}
}

// Close stops the server; Serve returns.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, m := range s.mapped {
		if m != nil {
			unix.Munmap(m)
		}
	}
	s.mapped = nil
	unix.Close(s.pidfd)
	return unix.Close(s.lfd)
}

// ErrTargetExited: the process the server was for has exited.
var ErrTargetExited = errors.New("fdtransfer: the target exited")

// Serve waits (at most AcceptTimeout) for the target to connect, then
// answers its requests until it closes the connection (nil), the target
// exits, ctx ends or Close is called. Connections from any other process
// are closed unanswered.
func (s *Server) Serve(ctx context.Context) error {
	pidfd := s.pidfd
	deadline := time.Now().Add(AcceptTimeout)
	for {
		if err := s.wait(ctx, s.lfd, unix.POLLIN, pidfd, deadline); err != nil {
			return err
		}
		// Non-blocking: a reply the agent does not read waits under ctx
		// and the target's life, as every read does.
		peer, _, err := unix.Accept4(s.lfd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("fdtransfer: accept: %w", err)
		}
		cred, err := unix.GetsockoptUcred(peer, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil || int(cred.Pid) != s.pid {
			s.strangers.Add(1)
			unix.Close(peer)
			continue
		}
		defer unix.Close(peer)
		// The bound counts what the target still holds from earlier
		// connections (every start is one): a perf event's ring stays
		// pinned, charged to no one, for as long as the agent keeps it.
		room := MaxDescriptors - s.heldPerfEvents()
		return s.serve(ctx, &conn{fd: peer, pidfd: pidfd, given: map[threadKey]bool{}, room: room, tokens: requestBurst, refill: time.Now()})
	}
}

// conn is the target's connection, with what ends a wait on it and what
// it was given so far.
type conn struct {
	fd, pidfd int
	// given holds the threads that have an event: one each (a thread is
	// its host id and start time, so a new thread reusing an id is new).
	given    map[threadKey]bool
	room     int // events this connection may still be given
	kallsyms bool
	// tokens is the request rate's bucket, last refilled at refill.
	tokens float64
	refill time.Time
}

type threadKey struct {
	tid   int
	start uint64
}

// pace waits until the connection may send another request (the rate
// cap), under ctx and the target's life.
func (s *Server) pace(ctx context.Context, c *conn) error {
	now := time.Now()
	c.tokens = min(requestBurst, c.tokens+now.Sub(c.refill).Seconds()*requestRate)
	c.refill = now
	if c.tokens >= 1 {
		c.tokens--
		return nil
	}
	wait := time.Duration((1 - c.tokens) / requestRate * float64(time.Second))
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	c.tokens, c.refill = 0, time.Now()
	return nil
}

// wait polls fd for events, in slices short enough to see ctx end; the
// pidfd turning readable means the target exited.
func (s *Server) wait(ctx context.Context, fd int, events int16, pidfd int, deadline time.Time) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return fmt.Errorf("fdtransfer: the agent did not connect within %v", AcceptTimeout)
		}
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return errors.New("fdtransfer: server closed")
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: events}, {Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("fdtransfer: poll: %w", err)
		}
		if n > 0 && fds[1].Revents != 0 {
			return ErrTargetExited
		}
		if n > 0 && fds[0].Revents != 0 {
			return nil
		}
	}
}

func (s *Server) serve(ctx context.Context, c *conn) (err error) {
	// A backstop: whatever a request does to the parser or the policy,
	// it ends this connection, never the process serving it (a root
	// collect, a daemon).
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("fdtransfer: a request the server could not handle ended the connection: %v", p)
		}
	}()
	buf := make([]byte, maxRequest)
	for {
		if err := s.wait(ctx, c.fd, unix.POLLIN, c.pidfd, time.Time{}); err != nil {
			return err
		}
		n, err := unix.Read(c.fd, buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("fdtransfer: read: %w", err)
		}
		if n == 0 {
			return nil // the profiler stopped
		}
		if n < 4 {
			continue
		}
		if err := s.pace(ctx, c); err != nil {
			return err
		}
		switch order.Uint32(buf) {
		case requestPerfFD:
			err = s.perfFD(ctx, c, buf[:n])
		case requestKallsymsFD:
			err = s.kallsymsFD(ctx, c)
		default:
			continue // asprof ignores an unknown request too
		}
		if err != nil {
			return err
		}
	}
}

var order = binary.NativeEndian

// perfRequest is a PERF_FD request as parsed: attr is the attribute
// block in 8-byte aligned memory, probe the NUL-terminated probe name
// when one was sent.
type perfRequest struct {
	tid, cpu int32
	size     int // attr.size as sent: the bytes of attr that came in the request
	attr     []uint64
	probe    []byte
}

// parsePerfRequest reads a PERF_FD request; a non-zero errno is the
// answer to a malformed one.
func parsePerfRequest(req []byte) (perfRequest, unix.Errno) {
	var r perfRequest
	if len(req) < attrOffset+minAttrSize {
		return r, unix.EINVAL
	}
	r.tid = int32(order.Uint32(req[4:]))
	r.cpu = int32(order.Uint32(req[8:]))
	size := int(order.Uint32(req[attrOffset+4:]))
	if size < minAttrSize || size > maxAttrSize || attrOffset+size > len(req) {
		return r, unix.EINVAL
	}
	// At least the largest attribute block the policy reads, zeroed past
	// what was sent (the kernel reads only attr.size bytes of it).
	r.size = size
	r.attr = make([]uint64, max(size, fullAttrSize)/8+1)
	copy(attrBytes(r.attr), req[attrOffset:attrOffset+size])
	if rest := req[attrOffset+size:]; len(rest) > 0 && rest[0] != 0 {
		end := bytes.IndexByte(rest[:min(len(rest), maxProbeName)], 0)
		if end < 0 {
			return r, unix.EINVAL
		}
		r.probe = append([]byte(nil), rest[:end+1]...)
	}
	return r, 0
}

func attrBytes(a []uint64) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&a[0])), len(a)*8)
}

// perfFD opens the perf event the agent asks for, if the policy allows
// it, for one of its own threads that has none yet, and sends it back.
func (s *Server) perfFD(ctx context.Context, c *conn, req []byte) error {
	r, errno := parsePerfRequest(req)
	if errno == 0 {
		errno = s.policy.judge(&r)
	}
	if errno == 0 && len(c.given) >= c.room {
		errno = unix.EPERM
	}
	host, start := 0, uint64(0)
	if errno == 0 {
		var ok bool
		if host, start, ok = s.hostTID(r.tid); !ok {
			errno = unix.ESRCH
		} else if c.given[threadKey{host, start}] {
			errno = unix.EBUSY // one event per thread: the agent asks once
		}
	}
	if errno == 0 {
		var probe *os.File
		probe, errno = s.probeName(ctx, &r)
		if probe != nil {
			defer probe.Close()
		}
	}
	if errno != 0 {
		return s.refuse(ctx, c, requestPerfFD, errno, r.tid)
	}
	fd, _, errno := unix.Syscall6(unix.SYS_PERF_EVENT_OPEN, uintptr(unsafe.Pointer(&r.attr[0])), uintptr(host), uintptr(r.cpu), ^uintptr(0), unix.PERF_FLAG_FD_CLOEXEC, 0)
	runtime.KeepAlive(r.attr)
	runtime.KeepAlive(r.probe)
	if errno != 0 {
		return s.refuse(ctx, c, requestPerfFD, errno, r.tid)
	}
	defer unix.Close(int(fd))
	c.given[threadKey{host, start}] = true
	s.premap(int(fd))
	s.perfFDs.Add(1)
	return s.reply(ctx, c, requestPerfFD, 0, r.tid, int(fd))
}

// heldPerfEvents counts the perf event descriptors the target holds
// (at most maxFDScan of its descriptors are looked at; past that it is
// taken to hold the bound already).
func (s *Server) heldPerfEvents() int {
	d, err := os.Open(fmt.Sprintf("/proc/%d/fd", s.pid))
	if err != nil {
		return 0
	}
	defer d.Close()
	names, _ := d.Readdirnames(maxFDScan + 1)
	if len(names) > maxFDScan {
		return MaxDescriptors
	}
	held := 0
	for _, n := range names {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", s.pid, n)); err == nil && l == "anon_inode:[perf_event]" {
			held++
		}
	}
	return held
}

// maxFDScan bounds the target's descriptors looked at when a connection
// starts.
const maxFDScan = 1 << 16

// refuse answers a request with errno, counted.
func (s *Server) refuse(ctx context.Context, c *conn, typ uint32, errno unix.Errno, tid int32) error {
	s.refused.Add(1)
	if errno == unix.EACCES || errno == unix.EPERM {
		s.denied.Add(1)
	}
	return s.reply(ctx, c, typ, int32(errno), tid, -1)
}

// probeName points a probe event's config1 at its name in our memory.
// For the kprobe and uprobe PMUs config1 is a pointer the kernel reads
// as a string — a kernel function, or a file path it resolves as we see
// the file system. So a probe event must come with its name (a pointer
// of the agent's into our memory is never passed on), and a uprobe's
// path is opened here inside the target's root, without leaving it, and
// given to the kernel as /proc/self/fd/N: the file probed is the
// target's, never a file of the host's of the same name. The file is
// returned to be closed after perf_event_open. Other event types keep
// config1 as sent (a breakpoint's address, a PMU's extra config) and
// ignore a name.
func (s *Server) probeName(ctx context.Context, r *perfRequest) (*os.File, unix.Errno) {
	typ := order.Uint32(attrBytes(r.attr))
	kprobe, uprobe := probePMUs()
	if typ != kprobe && typ != uprobe {
		r.probe = nil
		return nil, 0
	}
	if len(r.probe) < 2 {
		return nil, unix.EINVAL
	}
	var f *os.File
	if typ == uprobe {
		path := string(r.probe[:len(r.probe)-1])
		if !strings.HasPrefix(path, "/") {
			return nil, unix.EINVAL
		}
		h, err := safefile.OpenIn(ctx, fmt.Sprintf("/proc/%d/root", s.pid), path, 1<<40, safefile.Accept{FollowLast: true})
		if err != nil {
			// Not a regular file, someone else's, ...: no such file to probe.
			return nil, errnoOf(err, unix.ENOENT)
		}
		f = h.File()
		r.probe = append([]byte(fmt.Sprintf("/proc/self/fd/%d", f.Fd())), 0)
	}
	order.PutUint64(attrBytes(r.attr)[config1Offset:], uint64(uintptr(unsafe.Pointer(&r.probe[0]))))
	return f, 0
}

// probePMUs are the kernel's dynamic PMU types of kprobes and uprobes
// (0 where the kernel has none: no event type is 0 but hardware's, which
// takes no name).
var probePMUs = sync.OnceValues(func() (kprobe, uprobe uint32) {
	read := func(name string) uint32 {
		b, err := os.ReadFile("/sys/bus/event_source/devices/" + name + "/type")
		if err != nil {
			return ^uint32(0)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
		if err != nil || n == 0 {
			return ^uint32(0)
		}
		return uint32(n)
	}
	return read("kprobe"), read("uprobe")
})

// premap maps the event's ring buffer here, as asprof's server does:
// mapping may need privileges the target lacks, and once mapped the
// agent's own mapping reuses the same pages. Failures are the agent's to
// report when it maps.
func (s *Server) premap(fd int) {
	size := 2 * os.Getpagesize() // what the agent maps (PerfEvents::createForThread)
	m, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.mapped) < maxMapped {
		s.mapped = append(s.mapped, m)
		return
	}
	unix.Munmap(s.mapped[s.next])
	s.mapped[s.next] = m
	s.next = (s.next + 1) % maxMapped
}

// hostTID translates a thread id of the target's pid namespace into
// ours, and only for a live thread of the target (its NSpid line's last
// field is the id the agent knows it by), with the thread's start time.
// The map is built once; a miss lists the target's threads again and
// reads the status of new ids only, at most once per tidNewScan (a
// miss waits for its turn): threads that start together are all found,
// and a flood of made-up ids costs a listing per tidNewScan, not a
// status read per thread per request.
func (s *Server) hostTID(tid int32) (host int, start uint64, ok bool) {
	if tid <= 0 {
		return 0, 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	lookup := func() (int, uint64, bool) {
		h, ok := s.tids[tid]
		if !ok {
			return 0, 0, false
		}
		st, err := proc.FS{}.Proc(s.pid).Task(h).Stat()
		if err != nil {
			delete(s.tids, tid) // gone
			delete(s.known, h)
			return 0, 0, false
		}
		return h, st.StartTime, true
	}
	if h, st, ok := lookup(); ok {
		return h, st, true
	}
	if wait := max(tidNewScan, listingShare*s.scanCost) - time.Since(s.scanAt); wait > 0 {
		time.Sleep(wait)
	}
	s.scanAt = time.Now()
	s.tidScans.Add(1)
	s.scanTasks()
	return lookup()
}

// scanTasks adds the target's threads not yet mapped (s.mu held): one
// listing of its task directory, read with getdents into a reused
// buffer (no allocation per thread), and one status read per new
// thread.
func (s *Server) scanTasks() {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/task", s.pid), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	if s.dents == nil {
		s.dents = make([]byte, 256<<10)
	}
	seen := 0
	s.scanCost = 0
	for seen < 1<<16 {
		t := time.Now()
		n, err := unix.Getdents(fd, s.dents)
		s.scanCost += time.Since(t)
		if err != nil || n <= 0 {
			return
		}
		for b := s.dents[:n]; len(b) >= 19; {
			reclen := int(order.Uint16(b[16:]))
			if reclen < 19 || reclen > len(b) {
				return
			}
			h := atoi(b[19:reclen])
			b = b[reclen:]
			seen++
			if h <= 0 || s.known[h] {
				continue
			}
			if ns, ok := nsTID(s.pid, h); ok {
				s.tids[ns] = h
				s.known[h] = true
			}
		}
	}
}

// atoi reads the decimal number a NUL-terminated directory entry name
// starts with; -1 for a name that is not one ("." and "..").
func atoi(name []byte) int {
	n := 0
	for i, c := range name {
		switch {
		case c == 0 && i > 0:
			return n
		case c < '0' || c > '9' || n > 1<<30:
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return -1
}

// nsTID is a thread's id in its innermost pid namespace (the last
// NSpid entry of its status).
func nsTID(pid, tid int) (int32, bool) {
	st, err := proc.FS{}.Proc(pid).Task(tid).Status()
	if err != nil {
		return 0, false
	}
	if len(st.NSpid) == 0 {
		return int32(tid), true // a kernel without NSpid: one namespace
	}
	return int32(st.NSpid[len(st.NSpid)-1]), true
}

// kallsymsFD sends a copy of /proc/kallsyms as root reads it (with real
// addresses) — only when the policy serves kernel frames, and once per
// connection (the copy is memory charged to the server until the agent
// closes it). It is an unnamed memory file, sealed against any change
// and sent read-only: a descriptor of /proc/kallsyms itself would be
// checked again on each read by kernels before 4.15.
func (s *Server) kallsymsFD(ctx context.Context, c *conn) error {
	if !s.policy.Kernel || c.kallsyms {
		return s.refuse(ctx, c, requestKallsymsFD, unix.EPERM, 0)
	}
	c.kallsyms = true
	fd, err := sealedKallsyms()
	if err != nil {
		return s.refuse(ctx, c, requestKallsymsFD, errnoOf(err, unix.EIO), 0)
	}
	defer unix.Close(fd)
	s.kallsyms.Add(1)
	return s.reply(ctx, c, requestKallsymsFD, 0, 0, fd)
}

// sealedKallsyms copies /proc/kallsyms into a memfd, seals it (no write,
// grow, shrink or further seal) and returns a read-only descriptor of it.
func sealedKallsyms() (int, error) {
	mfd, err := unix.MemfdCreate("safeattach-kallsyms", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, err
	}
	dst := os.NewFile(uintptr(mfd), "kallsyms") // owns mfd
	defer dst.Close()
	src, err := os.Open("/proc/kallsyms")
	if err != nil {
		return -1, err
	}
	defer src.Close()
	if _, err := io.Copy(dst, io.LimitReader(src, maxKallsyms)); err != nil {
		return -1, err
	}
	if _, err := unix.FcntlInt(dst.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL); err != nil {
		return -1, err
	}
	return unix.Open(fmt.Sprintf("/proc/self/fd/%d", dst.Fd()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
}

// errnoOf is the errno err carries, else otherwise: what the agent is
// answered.
func errnoOf(err error, otherwise unix.Errno) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return otherwise
}

// reply sends a response, with the descriptor when fd ≥ 0.
func (s *Server) reply(ctx context.Context, c *conn, typ uint32, errno, tid int32, fd int) error {
	var resp []byte
	resp = order.AppendUint32(resp, typ)
	resp = order.AppendUint32(resp, uint32(errno))
	if typ == requestPerfFD {
		resp = order.AppendUint32(resp, uint32(tid))
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	for {
		err := unix.Sendmsg(c.fd, resp, oob, nil, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			// A full socket buffer: an agent that asks without reading
			// its answers costs a wait bounded like any other.
			if err := s.wait(ctx, c.fd, unix.POLLOUT, c.pidfd, time.Time{}); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("fdtransfer: send: %w", err)
		}
		return nil
	}
}
