package hotspot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/testenv"
)

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newClient(t *testing.T, p *testenv.Process, jdk testenv.JDK) *Client {
	t.Helper()
	tg, err := NewJVM(p.PID)
	if err != nil {
		t.Fatal(err)
	}
	tg.Feature = jdk.Feature
	if err := EnsureListener(ctxFor(t, 20*time.Second), tg); err != nil {
		t.Fatalf("EnsureListener: %v\n%s", err, p.Output())
	}
	return NewClient(tg)
}

// TestLiveCommandsEveryJDK runs the protocol's commands on every JDK.
func TestLiveCommandsEveryJDK(t *testing.T) {
	agent := testenv.BuildAgent(t, testenv.AgentRecordOptions)
	for _, jdk := range testenv.JDKs(t) {
		t.Run(jdk.String(), func(t *testing.T) {
			t.Parallel()
			p := testenv.StartJVM(t, testenv.JVMSpec{JDK: jdk})
			c := newClient(t, p, jdk)
			ctx := ctxFor(t, 30*time.Second)
			var out bytes.Buffer
			if code, err := c.Jcmd(ctx, &out, "VM.version"); err != nil || code != 0 || !strings.Contains(out.String(), jdk.Version) {
				t.Errorf("jcmd VM.version: %d %v %q", code, err, out.String())
			}
			r, err := c.Properties(ctx)
			if err != nil || !bytes.Contains(r.Output, []byte("java.version="+jdk.Version)) {
				t.Errorf("properties: %v", err)
			}
			out.Reset()
			if code, err := c.ThreadDump(ctx, &out, true); err != nil || code != 0 || !strings.Contains(out.String(), "\"main\"") {
				t.Errorf("threaddump: %d %v", code, err)
			}
			if r, err := c.PrintFlag(ctx, "MaxHeapSize"); err != nil || !bytes.Contains(r.Output, []byte("MaxHeapSize")) {
				t.Errorf("printflag: %v", err)
			}
			if _, err := c.SetFlag(ctx, "HeapDumpOnOutOfMemoryError", "1"); err != nil {
				t.Errorf("setflag: %v", err)
			}
			if _, err := c.AgentProperties(ctx); err != nil {
				t.Errorf("agentProperties: %v", err)
			}
			out.Reset()
			if code, err := c.InspectHeap(ctx, &out); err != nil || code != 0 || !strings.Contains(out.String(), "java.lang.String") {
				t.Errorf("inspectheap: %d %v", code, err)
			}
			dump := filepath.Join(p.Dir, "heap.hprof")
			if _, err := c.DumpHeap(ctx, dump, true); err != nil {
				t.Errorf("dumpheap: %v", err)
			} else if fi, err := os.Stat(dump); err != nil || fi.Size() == 0 {
				t.Errorf("no heap dump: %v", err)
			}
			if _, err := c.DataDump(ctx); err != nil {
				t.Errorf("datadump: %v", err)
			}
			if _, err := c.Run(ctx, "nosuchcommand"); err == nil {
				t.Error("unknown command succeeded")
			}
			// load: options arrive intact; a failing agent's rc and a
			// missing Agent_OnAttach surface as *AgentError on every JDK.
			rec := filepath.Join(p.Dir, "options.txt")
			opts := "out=" + rec + ",hello=world"
			if _, err := c.Load(ctx, agent, opts); err != nil {
				t.Fatalf("load: %v", err)
			}
			if got, _ := os.ReadFile(rec); string(got) != opts {
				t.Errorf("agent got options %q, want %q", got, opts)
			}
			var ae *AgentError
			if _, err := c.Load(ctx, testenv.BuildAgent(t, testenv.AgentFailRC), ""); !errors.As(err, &ae) || ae.ReturnCode != 42 {
				t.Errorf("failing agent: %v", err)
			}
			if _, err := c.Load(ctx, testenv.BuildAgent(t, testenv.AgentNoOnAttach), ""); !errors.As(err, &ae) || !strings.Contains(ae.Message, "Agent_OnAttach") {
				t.Errorf("library without Agent_OnAttach: %v", err)
			}
			if _, err := c.Load(ctx, filepath.Join(p.Dir, "missing.so"), ""); !errors.As(err, &ae) {
				t.Errorf("missing library: %v", err)
			}
		})
	}
}

// TestLiveLongArguments: over 1024 bytes fails clearly on JDKs without
// protocol v2 and works through v2 where it is offered (JDK 24+).
func TestLiveLongArguments(t *testing.T) {
	agent := testenv.BuildAgent(t, testenv.AgentRecordOptions)
	for _, jdk := range testenv.JDKs(t) {
		t.Run(jdk.String(), func(t *testing.T) {
			t.Parallel()
			p := testenv.StartJVM(t, testenv.JVMSpec{JDK: jdk})
			c := newClient(t, p, jdk)
			rec := filepath.Join(p.Dir, "options.txt")
			opts := "out=" + rec + ",pad=" + strings.Repeat("x", 1500)
			_, err := c.Load(ctxFor(t, 20*time.Second), agent, opts)
			if jdk.Feature >= 24 {
				if err != nil {
					t.Fatalf("v2 load: %v", err)
				}
				if got, _ := os.ReadFile(rec); string(got) != opts {
					t.Errorf("options truncated: %d of %d bytes", len(got), len(opts))
				}
				return
			}
			if !errors.Is(err, ErrRequestTooLong) || !strings.Contains(err.Error(), "protocol v2") {
				t.Errorf("JDK %d: want a clear ErrRequestTooLong, got %v", jdk.Feature, err)
			}
		})
	}
}

func TestLiveConcurrentJcmd(t *testing.T) {
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	c := newClient(t, p, testenv.JDK17(t))
	ctx := ctxFor(t, 60*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			code, err := c.Jcmd(ctx, &out, "VM.version")
			if err == nil && (code != 0 || !strings.Contains(out.String(), "JDK")) {
				err = fmt.Errorf("code %d output %q", code, out.String())
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestLiveNeverSignalsUnsafeTargets: SIGQUIT is refused to a JVM run with
// -Xrs whose socket is gone, and to a process that is not a JVM even if
// it handles SIGQUIT; both are alive and unsignalled afterwards.
func TestLiveNeverSignalsUnsafeTargets(t *testing.T) {
	t.Run("Xrs-without-socket", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartJVM(t, testenv.JVMSpec{JVMArgs: []string{"-Xrs"}})
		tg, err := NewJVM(p.PID)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { _, err := os.Lstat(tg.SocketPath()); return err == nil })
		if err := os.Remove(tg.SocketPath()); err != nil {
			t.Fatal(err)
		}
		err = EnsureListener(ctxFor(t, 5*time.Second), tg)
		if !errors.Is(err, ErrUnsafeSignal) {
			t.Fatalf("want ErrUnsafeSignal, got %v", err)
		}
		testenv.RequireNoSIGQUITTaken(t, p)
	})
	t.Run("non-JVM-catching-SIGQUIT", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartSigquitCatcher(t)
		tg, err := NewJVM(p.PID)
		if err != nil {
			t.Fatal(err)
		}
		if err := EnsureListener(ctxFor(t, 5*time.Second), tg); !errors.Is(err, ErrUnsafeSignal) {
			t.Fatalf("want ErrUnsafeSignal, got %v", err)
		}
		testenv.SettleSigquitCatcher(t, p)
		if strings.Contains(p.Output(), testenv.SigquitMarker) {
			t.Fatalf("the non-JVM was signalled: %q", p.Output())
		}
		for _, path := range []string{fmt.Sprintf("/proc/%d/cwd/%s", p.PID, tg.triggerName()), "/tmp/" + tg.triggerName()} {
			if _, err := os.Lstat(path); err == nil {
				t.Errorf("trigger file %s left behind", path)
			}
		}
	})
}

// TestLiveRejectsForeignSocket: a socket at the attach path that another
// user created (a spoof, or a leftover) is never connected to.
func TestLiveRejectsForeignSocket(t *testing.T) {
	testenv.RequireRoot(t)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	tg, err := NewJVM(p.PID)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", tg.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); os.Remove(tg.SocketPath()) })
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	os.Chown(tg.SocketPath(), 1234, 1234)
	_, err = NewClient(tg).Run(ctxFor(t, 5*time.Second), "properties")
	if !errors.Is(err, ErrUntrustedSocket) {
		t.Fatalf("foreign-owned socket: %v", err)
	}
	// Owned by the JVM's user but served by another process: SO_PEERCRED.
	os.Chown(tg.SocketPath(), int(tg.UID), int(tg.GID))
	os.Chmod(tg.SocketPath(), 0o600)
	_, err = NewClient(tg).Run(ctxFor(t, 5*time.Second), "properties")
	if !errors.Is(err, ErrUntrustedSocket) || !strings.Contains(err.Error(), "served by pid") {
		t.Fatalf("spoofed server: %v", err)
	}
	select {
	case <-accepted:
		// connect() completes before SO_PEERCRED can be read; what matters
		// is that no request was written: the spoof got only a closed conn.
	default:
	}
}

// TestLiveJVMExitsMidAttach: the target dies while our request is in
// flight; the caller gets a clear error at once, not a hang.
func TestLiveJVMExitsMidAttach(t *testing.T) {
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	c := newClient(t, p, testenv.JDK17(t))
	done := make(chan error, 1)
	go func() {
		_, err := c.Load(ctxFor(t, 60*time.Second), testenv.BuildAgent(t, testenv.AgentBlockForever), "")
		done <- err
	}()
	// In flight: the JVM has mapped the agent, whose Agent_OnAttach
	// never returns.
	waitFor(t, func() bool {
		maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.PID))
		return strings.Contains(string(maps), "libblock_forever.so")
	})
	syscall.Kill(p.PID, syscall.SIGKILL)
	select {
	case err := <-done:
		if !errors.Is(err, ErrTargetExited) && !errors.Is(err, ErrConnectionClosed) {
			t.Errorf("want a target-exited error, got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the attach did not return after the JVM died")
	}
}

// TestLiveHungAgentCostsTheDeadline: an agent that never returns costs the
// caller its deadline and nothing more.
func TestLiveHungAgentCostsTheDeadline(t *testing.T) {
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	c := newClient(t, p, testenv.JDK17(t))
	deadline := 2 * time.Second
	start := time.Now()
	_, err := c.Load(ctxFor(t, deadline), testenv.BuildAgent(t, testenv.AgentBlockForever), "")
	took := time.Since(start)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("want ErrTimeout, got %v", err)
	}
	// A bound for a hang, not a performance assertion: the call must
	// return, and not long after its deadline (the benchmark measures it).
	if took > deadline+5*time.Second {
		t.Errorf("a %v deadline took %v", deadline, took)
	}
	if !p.Alive() {
		t.Error("the JVM died")
	}
}

// TestThreadCredentialSwitch: the per-thread switch used for JDK ≤ 10
// connects with the requested uid/gid (checked by the server's
// SO_PEERCRED), and leaves the process's own credentials untouched.
func TestThreadCredentialSwitch(t *testing.T) {
	testenv.RequireRoot(t)
	// t.TempDir's parent is 0700; uid 65534 needs to reach the socket.
	dir, err := os.MkdirTemp("/tmp", "safeattach-cred-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	path := filepath.Join(dir, "s")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	os.Chmod(path, 0o777)
	got := make(chan *unix.Ucred, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- nil
			return
		}
		raw, _ := c.(*net.UnixConn).SyscallConn()
		raw.Control(func(fd uintptr) {
			cred, _ := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
			got <- cred
		})
		c.Close()
	}()
	dumpable, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	conn, err := dialAs(path, 65534, 65534)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	// A credential change makes the whole process non-dumpable (the
	// kernel's mm flag): the switch gives back what it found.
	if after, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); after != dumpable {
		t.Errorf("PR_GET_DUMPABLE %d after the switch, %d before", after, dumpable)
	}
	cred := <-got
	if cred == nil || cred.Uid != 65534 || cred.Gid != 65534 {
		t.Fatalf("peer credentials %+v, want 65534/65534", cred)
	}
	if os.Geteuid() != 0 || os.Getegid() != 0 {
		t.Fatal("the process's credentials changed")
	}
	// Every thread of the process is still root.
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		data, _ := os.ReadFile("/proc/self/task/" + task.Name() + "/status")
		if !strings.Contains(string(data), "Uid:\t0\t0\t0\t0") {
			t.Errorf("thread %s is no longer root", task.Name())
		}
	}
}

func TestEncodeRequests(t *testing.T) {
	if got := string(encodeV1("jcmd", []string{"VM.version"})); got != "1\x00jcmd\x00VM.version\x00\x00\x00" {
		t.Errorf("v1 %q", got)
	}
	got, err := encodeV2("jcmd", []string{"VM.version"})
	if err != nil || string(got) != "2\x0016\x00jcmd\x00VM.version\x00" {
		t.Errorf("v2 %q %v", got, err)
	}
	if _, err := encodeV2("jcmd", []string{strings.Repeat("x", v2MaxSize)}); !errors.Is(err, ErrRequestTooLong) {
		t.Errorf("oversized v2: %v", err)
	}
	if fitsV1("load", []string{"a", "b", "c", "d"}) || fitsV1("averyveryverylongcommand", nil) || !fitsV1("load", []string{"a", "true", ""}) {
		t.Error("fitsV1")
	}
}

func TestParseLoadResult(t *testing.T) {
	for body, wantRC := range map[string]int{
		"return code: 0\n":  -1,
		"0\n":               -1, // JDK 8
		"":                  -1,
		"return code: 42\n": 42,
		"7\n":               7,
		"/x/y.so was not loaded.\n/x/y.so: cannot open shared object file\n":                              0,
		"Dynamic agent loading is not enabled. Use -XX:+EnableDynamicAgentLoading to launch target VM.\n": 0,
	} {
		err := parseLoadResult([]byte(body))
		var ae *AgentError
		switch {
		case wantRC == -1 && err != nil:
			t.Errorf("%q: unexpected %v", body, err)
		case wantRC != -1 && (!errors.As(err, &ae) || ae.ReturnCode != wantRC):
			t.Errorf("%q: got %v, want rc %d", body, err, wantRC)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("condition not met within 20s")
}
