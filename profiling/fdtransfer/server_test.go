package fdtransfer

import (
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/testenv"
)

// This test binary is also the stranger that connects before the agent:
// run with FDTRANSFER_STRANGER=<name>, it connects, sends a request and
// reports whether anything came back.
func TestMain(m *testing.M) {
	if name := os.Getenv("FDTRANSFER_STRANGER"); name != "" {
		os.Exit(stranger(name))
	}
	os.Exit(m.Run())
}

func stranger(name string) int {
	fd, err := dial(name)
	if err != nil {
		return 3
	}
	unix.Write(fd, perfRequestBytes(int32(unix.Gettid()), -1, taskClock(), ""))
	buf := make([]byte, 64)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	n, _ := unix.Read(fd, buf)
	if n > 0 {
		return 1 // answered: the server served a stranger
	}
	return 0
}

func dial(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// taskClock is the attribute block of a software event counting this
// thread's time, kernel included: what perf_event_paranoid 2 denies an
// unprivileged process (the agent's reason to ask).
func taskClock() []byte {
	attr := make([]byte, 128)
	binary.NativeEndian.PutUint32(attr[0:], unix.PERF_TYPE_SOFTWARE)
	binary.NativeEndian.PutUint32(attr[4:], 128)
	binary.NativeEndian.PutUint64(attr[8:], unix.PERF_COUNT_SW_TASK_CLOCK)
	return attr
}

// cpuClock is the attribute block async-profiler 4.5 sends for -e cpu
// (PerfEvents::createForThread): cpu-clock, call chains, the times for
// multiplexing, no kernel call chains without kernel symbols.
func cpuClock() []byte {
	attr := make([]byte, 128)
	binary.NativeEndian.PutUint32(attr[attrType:], unix.PERF_TYPE_SOFTWARE)
	binary.NativeEndian.PutUint32(attr[4:], 128)
	binary.NativeEndian.PutUint64(attr[attrConfig:], unix.PERF_COUNT_SW_CPU_CLOCK)
	binary.NativeEndian.PutUint64(attr[16:], 10_000_000)
	binary.NativeEndian.PutUint64(attr[attrSampleType:], sampleCallchain)
	binary.NativeEndian.PutUint64(attr[attrReadFormat:], formatTotalTimeEnabled|formatTotalTimeRunning)
	binary.NativeEndian.PutUint64(attr[attrFlags:], flagDisabled|2<<15|flagExcludeCallchainKernel)
	return attr
}

// perfRequestBytes lays out a PERF_FD request as async-profiler does.
func perfRequestBytes(tid, cpu int32, attr []byte, probe string) []byte {
	b := make([]byte, attrOffset+len(attr)+maxProbeName)
	binary.NativeEndian.PutUint32(b[0:], requestPerfFD)
	binary.NativeEndian.PutUint32(b[4:], uint32(tid))
	binary.NativeEndian.PutUint32(b[8:], uint32(cpu))
	copy(b[attrOffset:], attr)
	copy(b[attrOffset+len(attr):], probe)
	return b
}

// ask sends a request and returns the response's error and the
// descriptor that came with it (-1 for none).
func ask(t *testing.T, fd int, req []byte) (errno int32, tid int32, got int) {
	t.Helper()
	if _, err := unix.Write(fd, req); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
	if err != nil || n < 8 {
		t.Fatalf("response: %d bytes, %v", n, err)
	}
	errno = int32(binary.NativeEndian.Uint32(buf[4:]))
	if n >= 12 {
		tid = int32(binary.NativeEndian.Uint32(buf[8:]))
	}
	got = -1
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(msgs) == 1 {
		if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil && len(fds) == 1 {
			got = fds[0]
		}
	}
	return errno, tid, got
}

// TestServesItsTargetOnly: a process other than the target that connects
// first is turned away unanswered and the server waits on; the target
// gets perf events for its own threads only (ESRCH for another process's
// thread or for -1, "every process"), and a copy of kallsyms; hanging up
// ends Serve with nil. The target here is this test process.
func TestServesItsTargetOnly(t *testing.T) {
	testenv.RequireRoot(t)
	srv, err := Listen(os.Getpid(), Policy{Event: "cpu", Kernel: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FDTRANSFER_STRANGER="+srv.Name())
	if err := cmd.Run(); err != nil {
		t.Fatalf("the stranger was answered, or could not connect: %v", err)
	}
	if got := srv.Stats().Strangers; got != 1 {
		t.Fatalf("strangers turned away: %d", got)
	}

	fd, err := dial(srv.Name())
	if err != nil {
		t.Fatal(err)
	}
	self := int32(unix.Gettid())
	errno, tid, perf := ask(t, fd, perfRequestBytes(self, -1, cpuClock(), ""))
	if errno != 0 || perf < 0 || tid != self {
		t.Fatalf("own thread: errno %d, tid %d, fd %d", errno, tid, perf)
	}
	unix.Close(perf)
	sleeper := testenv.StartSleeper(t)
	for _, foreign := range []int32{int32(sleeper.PID), -1, 0} {
		if errno, _, got := ask(t, fd, perfRequestBytes(foreign, 0, cpuClock(), "")); errno != int32(unix.ESRCH) || got >= 0 {
			t.Errorf("tid %d (not the target's): errno %d, fd %d", foreign, errno, got)
		}
	}
	req := make([]byte, 4)
	binary.NativeEndian.PutUint32(req, requestKallsymsFD)
	errno, _, ks := ask(t, fd, req)
	if errno != 0 || ks < 0 {
		t.Fatalf("kallsyms: errno %d fd %d", errno, ks)
	}
	head := make([]byte, 64)
	n, _ := unix.Read(ks, head)
	unix.Close(ks)
	if n < 20 || !strings.Contains(string(head[:n]), " ") {
		t.Errorf("kallsyms copy starts %q", head[:n])
	}
	unix.Close(fd)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after the agent hung up: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not end when the agent hung up")
	}
	if st := srv.Stats(); st.PerfFDs != 1 || st.Kallsyms != 1 || st.Refused != 3 {
		t.Errorf("stats %+v", st)
	}
}

// TestMalformedRequests: what a hostile agent can send is answered with
// EINVAL, never read past its end.
func TestMalformedRequests(t *testing.T) {
	self := int32(unix.Gettid())
	long := perfRequestBytes(self, -1, taskClock(), "")
	for i := attrOffset + 128; i < len(long); i++ {
		long[i] = 'x' // a probe name with no NUL
	}
	huge := taskClock()
	binary.NativeEndian.PutUint32(huge[4:], 1<<20)
	tiny := taskClock()
	binary.NativeEndian.PutUint32(tiny[4:], 8)
	for name, req := range map[string][]byte{
		"short":          make([]byte, attrOffset+10),
		"attr.size huge": perfRequestBytes(self, -1, huge, ""),
		"attr.size tiny": perfRequestBytes(self, -1, tiny, ""),
		"probe no NUL":   long,
		"attr past end":  perfRequestBytes(self, -1, taskClock(), "")[:attrOffset+100],
	} {
		if _, errno := parsePerfRequest(req); errno != unix.EINVAL {
			t.Errorf("%s: errno %v, want EINVAL", name, errno)
		}
	}
	real, err := os.ReadFile("testdata/asprof45-perf-request.bin")
	if err != nil {
		t.Fatal(err)
	}
	if r, errno := parsePerfRequest(real); errno != 0 || r.cpu != -1 || r.size != 128 || r.probe != nil {
		t.Errorf("async-profiler 4.5's own request: %+v %v", r, errno)
	}
	r, errno := parsePerfRequest(perfRequestBytes(self, 3, taskClock(), "do_sys_open"))
	if errno != 0 || r.tid != self || r.cpu != 3 || string(r.probe) != "do_sys_open\x00" || r.size != 128 {
		t.Errorf("a good request: %+v %v", r, errno)
	}
	if uintptr(unsafe.Pointer(&r.attr[0]))%8 != 0 {
		t.Error("the attribute block is not 8-byte aligned")
	}
}

// FuzzPerfRequest: any bytes parse or are refused, without a panic, and
// a parsed request never claims more than was sent.
func FuzzPerfRequest(f *testing.F) {
	// A request as async-profiler 4.5 sends it (-e cpu for a JVM thread:
	// 145 bytes, the probe name cut after its NUL), captured with strace.
	real, err := os.ReadFile("testdata/asprof45-perf-request.bin")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(real)
	f.Add(perfRequestBytes(1, -1, taskClock(), ""))
	f.Add(perfRequestBytes(1, 0, taskClock(), "kprobe:do_sys_open"))
	f.Add(make([]byte, 80))
	small := cpuClock()[:64]
	binary.NativeEndian.PutUint32(small[4:], 64)
	f.Add(perfRequestBytes(1, -1, small, "")) // attr.size 64: the policy reads past it
	f.Fuzz(func(t *testing.T, req []byte) {
		r, errno := parsePerfRequest(req)
		if errno != 0 {
			return
		}
		if attrOffset+r.size > len(req) || len(r.probe) > maxProbeName {
			t.Fatalf("parsed more than was sent: attr %d probe %d of %d", r.size, len(r.probe), len(req))
		}
		// Every policy judges any parsed request without a panic (attr.size
		// 64-80 read past the block sent).
		for _, p := range fuzzPolicies {
			c := *r.clone()
			p.judge(&c)
		}
	})
}

// fuzzPolicies are the policies FuzzPerfRequest judges with.
var fuzzPolicies = func() []*compiledPolicy {
	var out []*compiledPolicy
	for _, p := range []Policy{{Event: "cpu"}, {Event: "cpu", Kernel: true, LBR: true}, {Event: "mem:0x1000"}, {Event: "trace:1"}, {Event: "itimer"}} {
		c, err := compile(p)
		if err != nil {
			panic(err)
		}
		out = append(out, c)
	}
	return out
}()

func (r perfRequest) clone() *perfRequest {
	r.attr = append([]uint64(nil), r.attr...)
	r.probe = append([]byte(nil), r.probe...)
	return &r
}

// TestTargetExitEndsServe: a target that exits before connecting ends
// the wait at once, not after AcceptTimeout.
func TestTargetExitEndsServe(t *testing.T) {
	testenv.RequireRoot(t)
	p := testenv.StartSleeper(t)
	srv, err := Listen(p.PID, Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	p.Cmd.Process.Kill()
	select {
	case err := <-done:
		if !errors.Is(err, ErrTargetExited) {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve went on waiting for a dead target")
	}
	// Served again (a session does, at each start), after the process
	// is gone and its pid free for another: still the exited target's
	// server, never the next process's of that pid.
	<-p.Exited()
	if err := srv.Serve(context.Background()); !errors.Is(err, ErrTargetExited) {
		t.Errorf("Serve after the target was reaped: %v", err)
	}
}

// uprobeAttr is the attribute block of a uprobe at a file offset; its
// path goes as the request's probe name.
func uprobeAttr(t *testing.T, offset uint64) []byte {
	_, uprobe := probePMUs()
	if uprobe == ^uint32(0) {
		testenv.Missing(t, "this kernel has no uprobe PMU (/sys/bus/event_source/devices/uprobe)")
	}
	attr := make([]byte, 128)
	binary.NativeEndian.PutUint32(attr[0:], uprobe)
	binary.NativeEndian.PutUint32(attr[4:], 128)
	binary.NativeEndian.PutUint64(attr[config1Offset+8:], offset) // config2
	return attr
}

// entryOffset is the file offset of this test binary's entry point
// (test binaries carry no symbol table).
func entryOffset(t *testing.T) uint64 {
	f, err := elf.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && f.Entry >= p.Vaddr && f.Entry < p.Vaddr+p.Filesz {
			return f.Entry - p.Vaddr + p.Off
		}
	}
	t.Fatalf("no segment holds the entry point of %s", os.Args[0])
	return 0
}

// TestProbeEvents: a uprobe's path is the target's: opened inside its
// root, never a host file of the same name, and handed to the kernel
// through our descriptor. A probe event without a name is refused (its
// config1 would be the agent's pointer into our memory); another event
// type keeps its config1 and ignores a name.
func TestProbeEvents(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	attr := uprobeAttr(t, entryOffset(t))
	pod := testenv.StartPod(t, testenv.PodSpec{})
	inPod := &Server{pid: pod.PID}
	ctx := context.Background()

	// A host-only path (this test binary, in the host's /tmp or cache)
	// does not exist for the pod.
	r, _ := parsePerfRequest(perfRequestBytes(1, -1, attr, os.Args[0]))
	if f, errno := inPod.probeName(ctx, &r); errno != unix.ENOENT || f != nil {
		t.Errorf("host path %s resolved for the pod: errno %v", os.Args[0], errno)
	}
	// A file the pod has is opened there: its libjvm, by the path the
	// pod sees.
	var libjvm string
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pod.PID))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(maps), "\n") {
		if f := strings.Fields(line); len(f) == 6 && strings.HasSuffix(f[5], "/libjvm.so") {
			libjvm = f[5]
		}
	}
	r, _ = parsePerfRequest(perfRequestBytes(1, -1, attr, libjvm))
	f, errno := inPod.probeName(ctx, &r)
	if errno != 0 || f == nil {
		t.Fatalf("the pod's %s: errno %v", libjvm, errno)
	}
	defer f.Close()
	var got, want unix.Stat_t
	unix.Fstat(int(f.Fd()), &got)
	if err := unix.Stat(fmt.Sprintf("/proc/%d/root%s", pod.PID, libjvm), &want); err != nil {
		t.Fatal(err)
	}
	if got.Ino != want.Ino || got.Dev != want.Dev || string(r.probe) != fmt.Sprintf("/proc/self/fd/%d\x00", f.Fd()) {
		t.Errorf("probe name %q (inode %d), want the pod's inode %d", r.probe, got.Ino, want.Ino)
	}
	if ptr := binary.NativeEndian.Uint64(attrBytes(r.attr)[config1Offset:]); ptr != uint64(uintptr(unsafe.Pointer(&r.probe[0]))) {
		t.Errorf("config1 %#x is not the probe name", ptr)
	}

	// No name: the agent's config1 is never passed on.
	withPointer := uprobeAttr(t, 0)
	binary.NativeEndian.PutUint64(withPointer[config1Offset:], 0xdeadbeef)
	r, _ = parsePerfRequest(perfRequestBytes(1, -1, withPointer, ""))
	if _, errno := inPod.probeName(ctx, &r); errno != unix.EINVAL {
		t.Errorf("a uprobe without a name: errno %v, want EINVAL", errno)
	}
	// Another type keeps config1 and drops the name.
	clock := taskClock()
	binary.NativeEndian.PutUint64(clock[config1Offset:], 42)
	r, _ = parsePerfRequest(perfRequestBytes(1, -1, clock, "/etc/shadow"))
	if f, errno := inPod.probeName(ctx, &r); errno != 0 || f != nil || r.probe != nil || binary.NativeEndian.Uint64(attrBytes(r.attr)[config1Offset:]) != 42 {
		t.Errorf("task-clock with a name: errno %v, probe %q", errno, r.probe)
	}

	// Live: this process as the target asks for a uprobe on its own
	// binary, as the operator named it, and gets it.
	srv, err := Listen(os.Getpid(), Policy{Event: fmt.Sprintf("uprobe:%s+%d", os.Args[0], entryOffset(t))})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go srv.Serve(ctx)
	fd, err := dial(srv.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	errno32, _, ev := ask(t, fd, perfRequestBytes(int32(unix.Gettid()), -1, attr, os.Args[0]))
	if errno32 != 0 || ev < 0 {
		t.Fatalf("uprobe on the entry point of this binary: errno %d", errno32)
	}
	unix.Close(ev)
}

// TestUnreadAnswersAreBounded: an agent that sends requests and never
// reads the answers fills its socket; the server's wait to answer is
// bounded by the caller's context like every other wait (it used to
// block in sendmsg for as long as the agent liked).
func TestUnreadAnswersAreBounded(t *testing.T) {
	testenv.RequireRoot(t)
	srv, err := Listen(os.Getpid(), Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	fd, err := dial(srv.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	unix.SetNonblock(fd, true)
	// Requests for a thread that is not the target's: small ESRCH
	// answers, never read, until neither side's buffer takes more.
	req := perfRequestBytes(-1, -1, taskClock(), "")
	sent := 0
	for stalled := 0; stalled < 20; {
		if _, err := unix.Write(fd, req); err != nil {
			stalled++
			time.Sleep(50 * time.Millisecond)
			continue
		}
		stalled = 0
		sent++
	}
	refused := srv.Stats().Refused
	t.Logf("%d requests sent, %d answered before the socket filled", sent, refused)
	if refused == 0 || refused >= int64(sent) {
		t.Fatalf("the server answered %d of %d: the socket never filled", refused, sent)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve is still blocked answering an agent that does not read")
	}
}
