package profiling

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/attach/hotspot"
	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/profiling/asprof"
)

// TestLiveAgentLogsAreCapped (the way back): the pod's user appends
// 1 MB of lines to every agent log as soon as it appears. Each command
// keeps at most maxLogLines lines, says how many more it dropped, and
// nothing is kept from one command to the next.
func TestLiveAgentLogsAreCapped(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	pod := testenv.StartPod(t, testenv.PodSpec{})
	pod.StartWaybackAttacker(t, "log")
	ctx := context.Background()
	ss, err := OpenSession(ctx, pod.PID, SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "itimer"}, Format: "collapsed"})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	if err := ss.Start(ctx); err != nil {
		t.Fatal(err)
	}
	capped := 0
	for i := range 20 {
		if _, err := ss.Rotate(ctx, io.Discard); err != nil {
			t.Fatalf("window %d: %v", i, err)
		}
		log := ss.LastLog()
		if len(log) > maxLogLines+1 {
			t.Fatalf("window %d kept %d log lines", i, len(log))
		}
		for _, l := range log {
			if len(l) > maxLogLineSize+8 {
				t.Fatalf("a log line of %d bytes", len(l))
			}
		}
		if len(log) > 0 && strings.Contains(log[len(log)-1], "more lines dropped") {
			capped++
		}
	}
	if capped == 0 {
		t.Fatal("the attack never reached a log (no command dropped lines)")
	}
	t.Logf("%d of 20 windows had their agent log capped", capped)
	if _, err := ss.Stop(ctx, io.Discard); err != nil {
		t.Fatal(err)
	}
}

// TestLiveOversizedOutputIsRefused (the way back, in the library):
// the pod's user makes each output a 900 MiB sparse file once the agent
// closed it. A profile whose output it reached fails before a byte is
// read, saying why, and the destination keeps what it had; one it did
// not reach in time (the attacker races the read) is the agent's small
// profile. Never is a large file read.
func TestLiveOversizedOutputIsRefused(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	pod := testenv.StartPod(t, testenv.PodSpec{})
	pod.StartWaybackAttacker(t, "sparse")
	out := filepath.Join(t.TempDir(), "p.collapsed")
	refused := 0
	for i := 0; i < 10 && refused == 0; i++ {
		os.WriteFile(out, []byte("previous"), 0o644)
		_, err := Profile(context.Background(), pod.PID, ProfileRequest{SessionRequest: SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "itimer"}, Output: out, MaxOutput: 64 << 20}, Duration: 300 * time.Millisecond})
		data, _ := os.ReadFile(out)
		switch {
		case err == nil && strings.Contains(string(data), "[itimer]") && len(data) < 1<<10:
			// the attacker lost this race
		case errors.Is(err, safefile.ErrTooLarge) && string(data) == "previous":
			// Refused at fstat ("943718400 bytes"), or — when the swap
			// lands while the file is being read — as it grows past the
			// limit: either way before the limit was read.
			refused++
		default:
			t.Fatalf("profile %d: %v, destination %d bytes", i, err, len(data))
		}
	}
	if refused == 0 {
		t.Fatal("the attacker never reached an output in 10 profiles")
	}
}

// agentStatus asks the look-alike in pid for its status the way another
// tool would: a raw load, no session, no record.
func agentStatus(t *testing.T, pid int, lib string) string {
	t.Helper()
	out := fmt.Sprintf("/tmp/status-%d.txt", time.Now().UnixNano())
	rawAgentLoad(t, pid, lib, "status,file="+out)
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/root%s", pid, out))
	os.Remove(fmt.Sprintf("/proc/%d/root%s", pid, out))
	return string(data)
}

// rawAgentLoad loads lib into pid with options through the bare protocol, as
// asprof or jattach would: the copy the JVM already maps when there is
// one (its path is the JVM's), else lib.
func rawAgentLoad(t *testing.T, pid int, lib, options string) {
	t.Helper()
	for _, line := range strings.Split(testenv.Maps(t, pid), "\n") {
		if f := strings.Fields(line); len(f) >= 6 && filepath.Base(f[5]) == filepath.Base(lib) {
			lib = f[5]
			break
		}
	}
	tg, err := hotspot.NewJVM(pid)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hotspot.EnsureListener(ctx, tg); err != nil {
		t.Fatal(err)
	}
	if _, err := hotspot.NewClient(tg).Load(ctx, lib, options); err != nil {
		t.Fatalf("raw load %s: %v", options, err)
	}
}

// TestLiveOneOwnerPerProfiler (the way back; invariant 12): a second
// session on a JVM whose profiler the first runs is refused with who
// started it and when, never silently merged; so is a start over a
// profiler another tool started (a dump or stop of it is explicit and
// allowed, as asprof allows it). Takeover is explicit.
func TestLiveOneOwnerPerProfiler(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	ctx := context.Background()
	first, err := OpenSession(ctx, p.PID, SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "wall"}, Format: "collapsed", Owner: "first"})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if err := first.Start(ctx); err != nil {
		t.Fatal(err)
	}
	second, err := OpenSession(ctx, p.PID, SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "itimer"}, Format: "collapsed", Owner: "second"})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	var busy *BusyError
	for name, try := range map[string]func() error{
		"start": func() error { return second.Start(ctx) },
		"stop":  func() error { _, err := second.Stop(ctx, io.Discard); return err },
		"dump":  func() error { _, err := second.Dump(ctx, io.Discard); return err },
	} {
		err := try()
		if !errors.As(err, &busy) || busy.Owner == nil || busy.Owner.Tool != "first" || attach.OutcomeOf(err) != attach.OutcomeRefused {
			t.Fatalf("second %s: %v", name, err)
		}
		if !strings.Contains(err.Error(), "started by first start") || !strings.Contains(err.Error(), "ago") {
			t.Errorf("the refusal does not say who and since when: %v", err)
		}
	}
	// The first profile was not disturbed: it stops with its own event.
	var out strings.Builder
	if _, err := first.Stop(ctx, &out); err != nil || !strings.Contains(out.String(), "[wall]") {
		t.Fatalf("first profile: %v %q", err, out.String())
	}
	// Now it is free.
	if err := second.Start(ctx); err != nil {
		t.Fatalf("start once free: %v", err)
	}
	if _, err := second.Stop(ctx, io.Discard); err != nil {
		t.Fatal(err)
	}

	// Another tool's profiler: no record, the agent says it runs.
	rawAgentLoad(t, p.PID, lib, "start,event=lock,file=/dev/null")
	err = second.Start(ctx)
	if !errors.As(err, &busy) || busy.Owner != nil || !strings.Contains(busy.Status, "Profiling is running for") {
		t.Fatalf("start over another tool's profiler: %v", err)
	}
	if !strings.Contains(agentStatus(t, p.PID, lib), "is running") {
		t.Fatal("the other tool's profiler was stopped by a refused start")
	}
	// A dump of it is explicit and done as asprof does: its profile, and
	// it runs on (async-profiler's own test suite stops a profiler
	// started with -agentpath at launch).
	out.Reset()
	if _, err := second.Dump(ctx, &out); err != nil || !strings.Contains(out.String(), "[lock]") {
		t.Fatalf("dump of another tool's profiler: %v %q", err, out.String())
	}
	if !strings.Contains(agentStatus(t, p.PID, lib), "is running") {
		t.Fatal("a dump stopped the other tool's profiler")
	}
	taker, err := OpenSession(ctx, p.PID, SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "itimer"}, Format: "collapsed", Takeover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer taker.Close()
	if err := taker.Start(ctx); err != nil {
		t.Fatalf("takeover: %v", err)
	}
	out.Reset()
	if _, err := taker.Stop(ctx, &out); err != nil || !strings.Contains(out.String(), "[itimer]") {
		t.Fatalf("after takeover: %v %q", err, out.String())
	}
}

// TestLiveKilledCallerLeavesNothingRunning (the way back): a caller
// killed mid-window (here: a session closed without stopping) leaves a
// profiler that stops by itself at its timeout=, and a JFR recording and
// record that the next session cleans up.
func TestLiveKilledCallerLeavesNothingRunning(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	pod := testenv.StartPod(t, testenv.PodSpec{})
	ctx := context.Background()
	gone, err := OpenSession(ctx, pod.PID, SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "itimer"}, Format: "jfr", AutoStop: 2 * time.Second, Owner: "killed"})
	if err != nil {
		t.Fatal(err)
	}
	if err := gone.Start(ctx); err != nil {
		t.Fatal(err)
	}
	gone.Close() // the caller dies here
	if !strings.Contains(agentStatus(t, pod.PID, lib), "is running") {
		t.Fatal("the profiler is not running after start")
	}
	// It stops by itself: polled, bounded well past the 2 s.
	stopped := time.Now()
	for st := ""; !strings.Contains(st, "not active"); st = agentStatus(t, pod.PID, lib) {
		if time.Since(stopped) > 20*time.Second {
			t.Fatalf("20 s after a 2 s timeout= the profiler still runs: %q", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("stopped by itself %v after the caller's Close", time.Since(stopped).Round(100*time.Millisecond))
	recs, _ := filepath.Glob(fmt.Sprintf("/proc/%d/root/tmp/.safeattach-rec-*", pod.PID))
	if len(recs) != 1 {
		t.Fatalf("the dead caller's recording: %v", recs)
	}
	next, err := OpenSession(ctx, pod.PID, SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "itimer"}, Format: "jfr", Owner: "next"})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if err := next.Start(ctx); err != nil {
		t.Fatalf("start after the dead caller's profiler expired: %v", err)
	}
	var jfr strings.Builder
	if _, err := next.Stop(ctx, &jfr); err != nil || !strings.HasPrefix(jfr.String(), "FLR\x00") {
		t.Fatalf("next profile: %v (%d bytes)", err, jfr.Len())
	}
	left, _ := filepath.Glob(fmt.Sprintf("/proc/%d/root/tmp/.safeattach-*", pod.PID))
	if len(left) != 0 {
		t.Errorf("left in the pod's /tmp: %v", left)
	}
}

// TestLiveDetachedStartIsFinishedLater (the way back): a start meant
// for a later stop (profile start … profile stop) keeps what the stop
// needs in its record: the later session writes the JFR the start began,
// and nothing stays in the target.
func TestLiveDetachedStartIsFinishedLater(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	pod := testenv.StartPod(t, testenv.PodSpec{})
	ctx := context.Background()
	a, err := OpenSession(ctx, pod.PID, SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "itimer"}, Format: "jfr", Detached: true, Output: "/srv/x.jfr"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	a.Close()
	b, err := OpenSession(ctx, pod.PID, SessionRequest{Lib: lib})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rec, err := b.Owner(ctx)
	if err != nil || rec == nil || rec.Output != "/srv/x.jfr" || !rec.Detached || rec.Recording == "" {
		t.Fatalf("record: %+v %v", rec, err)
	}
	var jfr strings.Builder
	if _, err := b.Stop(ctx, &jfr); err != nil || !strings.HasPrefix(jfr.String(), "FLR\x00") {
		t.Fatalf("stop of the detached JFR: %v (%d bytes, %q)", err, jfr.Len(), jfr.String()[:min(jfr.Len(), 40)])
	}
	left, _ := filepath.Glob(fmt.Sprintf("/proc/%d/root/tmp/.safeattach-*", pod.PID))
	if len(left) != 0 {
		t.Errorf("left in the pod's /tmp: %v", left)
	}
	if rec, _ := b.Owner(ctx); rec != nil {
		t.Errorf("record left: %+v", rec)
	}
}

// TestLiveAttachRightAfterLaunch: an agent loaded into
// a JVM the moment it starts, before it finished initialising, waits for
// the JVM's own signal (hsperfdata's sun.rt.createVmEndTime) and loads.
// With the real async-profiler (ASYNC_PROFILER_HOME), 20 attaches 0–1 s
// after launch all start the profiler ("JVM does not support Tool
// Interface" was what an early load got).
func TestLiveAttachRightAfterLaunch(t *testing.T) {
	t.Parallel()
	lib := testenv.ProfilerOrLookalike(t)
	runs := 10
	if os.Getenv("ASYNC_PROFILER_HOME") != "" {
		runs = 20
	}
	for i := range runs {
		p := testenv.StartJVM(t, testenv.JVMSpec{JVMArgs: []string{"-XX:+UsePerfData"}, NoWait: true})
		time.Sleep(time.Duration(i) * time.Second / time.Duration(runs))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ss, err := OpenSession(ctx, p.PID, SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "itimer"}, Format: "collapsed"})
		if err == nil {
			err = ss.Start(ctx)
			if err == nil {
				_, err = ss.Stop(ctx, io.Discard)
			}
			ss.Close()
		}
		cancel()
		if err != nil {
			t.Fatalf("attach %d, %v after launch: %v", i, time.Duration(i)*time.Second/time.Duration(runs), err)
		}
		p.Cmd.Process.Kill()
	}
}

// TestLiveJVMExitsMidProfile: a JVM that exits during
// a 30 s profile is seen at once (its pidfd), not after the duration,
// and the profile the agent wrote as it exited is the result.
func TestLiveJVMExitsMidProfile(t *testing.T) {
	t.Parallel()
	lib := testenv.ProfilerOrLookalike(t)
	p := testenv.StartJVM(t, testenv.JVMSpec{Workers: 1})
	out := filepath.Join(t.TempDir(), "last.collapsed")
	// The JVM is stopped once the profiler has run for two seconds (not
	// at a fixed time after the call: on a loaded machine the attach
	// itself took that long once, and an exit before the start leaves
	// nothing to dump).
	var once sync.Once
	stopJVM := func(elapsed, _ time.Duration) {
		if elapsed >= 2*time.Second {
			once.Do(func() { p.Cmd.Process.Signal(syscall.SIGTERM) })
		}
	}
	start := time.Now()
	res, err := Profile(context.Background(), p.PID, ProfileRequest{SessionRequest: SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "itimer"}, Output: out}, Duration: 30 * time.Second, Progress: stopJVM})
	took := time.Since(start)
	if err != nil || res == nil || !res.Exited {
		t.Fatalf("after %v: %v %+v", took, err, res)
	}
	if took > 10*time.Second {
		t.Errorf("the exit was noticed after %v", took)
	}
	if data, _ := os.ReadFile(out); !strings.Contains(string(data), "Target") {
		t.Errorf("last profile: %q", data)
	}
}

// TestAgentLogIsPrintable (the way back): what the target's user
// writes into an agent log — terminal sequences, C1 controls, broken
// UTF-8 — is kept escaped, and so is the agent's reason for a failure.
func TestAgentLogIsPrintable(t *testing.T) {
	log := capLines(strings.NewReader("Profiling started\n" + testenv.WaybackEscapes + "tab\tkept \xff\r\n"))
	want := []string{"Profiling started", `[ERROR] \x1b]52;c;cm0gLXJmIH4K\x07\x1b]0;owned\x07\x1b[31mred\x1b[0m\u009b2J`, "tab\tkept \\xff"}
	if strings.Join(log, "\n") != strings.Join(want, "\n") {
		t.Fatalf("kept %q, want %q", log, want)
	}
	err := agentReason(log, errors.New("agent returned 200"))
	var said *AgentSaidError
	if !errors.As(err, &said) || testenv.HasControl(err.Error()) || !strings.Contains(err.Error(), testenv.WaybackEscaped) {
		t.Fatalf("agent's reason: %q", err)
	}
}

// TestLiveTargetTextIsPrintable (the way back): the pod's user — its
// root or the JVM's own user — appends terminal sequences (OSC 52, OSC 0,
// colours, a C1 CSI) to every agent log and output it sees. No control
// character reaches LastLog, an agent's reason for a failure or a busy
// refusal's status, and the escaped sequence shows there; the profile
// itself is data, handed on unchanged.
func TestLiveTargetTextIsPrintable(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	testenv.EachWaybackAttacker(t, func(t *testing.T, pod *testenv.Pod) {
		ctx := context.Background()
		ss, err := OpenSession(ctx, pod.PID, SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "itimer"}, Format: "collapsed", Owner: "first"})
		if err != nil {
			t.Fatal(err)
		}
		defer ss.Close()
		other, err := OpenSession(ctx, pod.PID, SessionRequest{Lib: lib, Profiler: asprof.Options{Event: "itimer"}, Format: "collapsed", Owner: "second"})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		// The attacker races the read back of each file: each place
		// is tried until it was reached, and checked every time.
		var inLog, inData, inSaid, inStatus bool
		rounds := 0
		for ; rounds < 30 && !(inLog && inData && inSaid && inStatus); rounds++ {
			i := rounds
			if err := ss.Start(ctx); err != nil {
				t.Fatalf("round %d: start: %v", i, err)
			}
			inLog = checkLog(t, ss.LastLog()) || inLog
			var busy *BusyError
			if err := other.Start(ctx); !errors.As(err, &busy) {
				t.Fatalf("round %d: a second start: %v", i, err)
			} else if testenv.HasControl(err.Error()) {
				t.Fatalf("round %d: the refusal carries controls: %q", i, err)
			}
			inStatus = strings.Contains(busy.Status, testenv.WaybackEscaped) || inStatus
			var out bytes.Buffer
			if _, err := ss.Stop(ctx, &out); err != nil {
				t.Fatalf("round %d: stop: %v", i, err)
			}
			inLog = checkLog(t, ss.LastLog()) || inLog
			inData = strings.Contains(out.String(), testenv.WaybackEscapes) || inData
			// A stop with nothing running: the agent says why.
			_, err := ss.Stop(ctx, io.Discard)
			var said *AgentSaidError
			if !errors.As(err, &said) || testenv.HasControl(err.Error()) {
				t.Fatalf("round %d: stop of nothing: %q", i, err)
			}
			inSaid = strings.Contains(said.Said, testenv.WaybackEscaped) || inSaid
			checkLog(t, ss.LastLog())
		}
		if !(inLog && inData && inSaid && inStatus) {
			t.Fatalf("the attacker never reached some place in 30 rounds: log %v, data %v, agent's reason %v, status %v", inLog, inData, inSaid, inStatus)
		}
		t.Logf("every place reached in %d rounds", rounds)
	}, "escapes")
}

// checkLog fails the test if an agent log line holds a control
// character, and reports whether the attacker's text is in it.
func checkLog(t *testing.T, log []string) (reached bool) {
	t.Helper()
	for _, l := range log {
		if testenv.HasControl(l) {
			t.Fatalf("an agent log line with controls: %q", l)
		}
		reached = reached || strings.Contains(l, testenv.WaybackEscaped)
	}
	return reached
}
