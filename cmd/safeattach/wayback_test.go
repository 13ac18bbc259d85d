package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/google/pprof/profile"
	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/internal/testenv"
)

// cli runs the built CLI and returns its output and exit code.
func cli(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(testenv.BuildCLI(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestLiveTwoProfilesDoNotShare (the way back): -d 5, then, once the
// first has loaded the agent, -d 1 on the same JVM. The second is refused
// (exit 2) saying who runs the profiler and since when; the first
// finishes with its own data.
func TestLiveTwoProfilesDoNotShare(t *testing.T) {
	t.Parallel()
	bin := testenv.BuildCLI(t)
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	pid := fmt.Sprint(p.PID)
	dir := t.TempDir()
	first := exec.Command(bin, "profile", "--agent", lib, "-e", "wall", "-d", "5", "-f", filepath.Join(dir, "first.collapsed"), pid)
	var firstErr bytes.Buffer
	first.Stderr = &firstErr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- first.Wait() }()
	t.Cleanup(func() { first.Process.Kill() })
	// The first profile's record is written before it sends its start:
	// the JVM mapping the agent means the first one owns the profiler.
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(mapsOf(t, p.PID), filepath.Base(lib)); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first profile did not load the agent within 60 s")
		}
	}
	_, stderr, code := cli(t, nil, "profile", "--agent", lib, "-e", "itimer", "-d", "1", "-f", filepath.Join(dir, "second.collapsed"), pid)
	if code != exitRefused || !strings.Contains(stderr, "started by safeattach profile collect") || !strings.Contains(stderr, "ago") {
		t.Fatalf("second profile: exit %d, %q", code, stderr)
	}
	if err := <-done; err != nil {
		t.Fatalf("first profile: %v\n%s", err, firstErr.String())
	}
	data, _ := os.ReadFile(filepath.Join(dir, "first.collapsed"))
	if !strings.Contains(string(data), "[wall]") {
		t.Errorf("first profile: %q", data)
	}
	if _, err := os.Stat(filepath.Join(dir, "second.collapsed")); err == nil {
		t.Error("the refused profile wrote a file")
	}
}

// TestLiveStartStopKeepTheirFiles (the way back): start -o jfr then
// stop -f x.jfr writes x.jfr; start -f y.jfr then a bare stop writes
// y.jfr. Nothing stays in the target's /tmp.
func TestLiveStartStopKeepTheirFiles(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	pod := testenv.StartPod(t, testenv.PodSpec{})
	pid := fmt.Sprint(pod.PID)
	dir := t.TempDir()
	step := func(args ...string) string {
		t.Helper()
		_, stderr, code := cli(t, nil, append([]string{"profile"}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		return stderr
	}
	x := filepath.Join(dir, "x.jfr")
	step("start", "--agent", lib, "-e", "itimer", "-o", "jfr", pid)
	step("stop", "--agent", lib, "-f", x, pid)
	if data, _ := os.ReadFile(x); !bytes.HasPrefix(data, []byte("FLR\x00")) {
		t.Fatalf("x.jfr: %d bytes, not a recording", len(data))
	}
	y := filepath.Join(dir, "y.jfr")
	step("start", "--agent", lib, "-e", "itimer", "-f", y, pid)
	if stderr := step("stop", "--agent", lib, pid); !strings.Contains(stderr, "writing "+y) {
		t.Errorf("stop did not say where it wrote: %q", stderr)
	}
	if data, _ := os.ReadFile(y); !bytes.HasPrefix(data, []byte("FLR\x00")) {
		t.Fatalf("y.jfr: %d bytes, not a recording", len(data))
	}
	left, _ := filepath.Glob(fmt.Sprintf("/proc/%d/root/tmp/.safeattach-*", pod.PID))
	if len(left) != 0 {
		t.Errorf("left in the target's /tmp: %v", left)
	}
}

// TestLiveLoopWindows (the way back): a window under a second is a
// usage error, as is a loop whose files would all have one name; with
// %t every window gets a file of its own.
func TestLiveLoopWindows(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	pid := fmt.Sprint(p.PID)
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--loop", "1ms", "-d", "3s", "-f", filepath.Join(dir, "w-%t.collapsed")},
		{"--loop", "1s", "-d", "3s", "-f", filepath.Join(dir, "same.collapsed")},
	} {
		_, stderr, code := cli(t, nil, append([]string{"profile", "--agent", lib}, append(args, pid)...)...)
		if code != exitError {
			t.Errorf("%v: exit %d %q", args, code, stderr)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a refused loop wrote files: %v", entries)
	}
	_, stderr, code := cli(t, nil, "profile", "--agent", lib, "--loop", "1s", "-d", "3s", "-f", filepath.Join(dir, "w-%t.collapsed"), pid)
	if code != 0 {
		t.Fatalf("loop: exit %d %s", code, stderr)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "w-*.collapsed"))
	sort.Strings(files)
	if len(files) < 3 {
		t.Fatalf("3 s in 1 s windows: %d files %v\n%s", len(files), files, stderr)
	}
	for _, f := range files {
		if data, _ := os.ReadFile(f); !strings.Contains(string(data), "Target.churn") {
			t.Errorf("%s: %q", f, data)
		}
	}
	for name := range windowNamesSeen(files) {
		if strings.Count(stderr, name) > 1 {
			t.Errorf("%s written twice", name)
		}
	}
}

func windowNamesSeen(files []string) map[string]bool {
	m := map[string]bool{}
	for _, f := range files {
		m[filepath.Base(f)] = true
	}
	return m
}

// watchCreates records the names created in dirs until stop is called.
func watchCreates(t *testing.T, dirs ...string) (stop func() []string) {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	wd := map[int]string{}
	for _, d := range dirs {
		w, err := unix.InotifyAddWatch(fd, d, unix.IN_CREATE|unix.IN_MOVED_TO)
		if err != nil {
			t.Fatal(err)
		}
		wd[w] = d
	}
	return func() []string {
		defer unix.Close(fd)
		var names []string
		buf := make([]byte, 64<<10)
		for {
			n, err := unix.Read(fd, buf)
			if n <= 0 || err != nil {
				return names
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				e := (*unix.InotifyEvent)(unsafePointer(&buf[off]))
				name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(e.Len)]), "\x00")
				names = append(names, filepath.Join(wd[int(e.Wd)], name))
				off += unix.SizeofInotifyEvent + int(e.Len)
			}
		}
	}
}

// TestLivePprofNamesNothing (the way back): -o pprof converts
// a real async-profiler recording (written by the look-alike) in a
// bounded child. Nothing is created in the temporary directory, and in
// the output's directory only a random temporary name and the output:
// there is no name a local user could prepare a symlink for.
func TestLivePprofNamesNothing(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	tmp, outDir := t.TempDir(), t.TempDir()
	out := filepath.Join(outDir, "cpu.pb.gz")
	stop := watchCreates(t, tmp, outDir)
	stdout, stderr, code := cli(t, []string{"TMPDIR=" + tmp}, "profile", "--agent", lib, "-e", "itimer", "-d", "1", "-o", "pprof", "-f", out, fmt.Sprint(p.PID))
	created := stop()
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "process_cpu") {
		t.Errorf("stderr %q", stderr)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	prof, err := profile.Parse(f)
	if err != nil || len(prof.Sample) == 0 {
		t.Fatalf("not a pprof profile with samples: %v", err)
	}
	for _, c := range created {
		switch {
		case c == out:
		case filepath.Dir(c) == outDir && strings.HasPrefix(filepath.Base(c), ".cpu.pb.gz."):
		default:
			t.Errorf("created %s", c)
		}
	}
}

func unsafePointer(b *byte) unsafe.Pointer { return unsafe.Pointer(b) }

// TestLiveJSONForEveryAction: start, status, stop and a busy
// refusal each print one JSON result (action, agent answer, the file
// written, who runs the profiler).
func TestLiveJSONForEveryAction(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	pid := fmt.Sprint(p.PID)
	out := filepath.Join(t.TempDir(), "p.collapsed")
	run := func(wantCode int, args ...string) map[string]any {
		t.Helper()
		stdout, stderr, code := cli(t, nil, append([]string{"profile", "--json", "--agent", lib}, args...)...)
		var r map[string]any
		if err := json.Unmarshal([]byte(stdout), &r); err != nil || code != wantCode {
			t.Fatalf("%v: exit %d, %v\nstdout %s\nstderr %s", args, code, err, stdout, stderr)
		}
		return r
	}
	if r := run(0, "start", "-e", "wall", pid); r["action"] != "start" || r["outcome"] != "ok" {
		t.Errorf("start: %v", r)
	}
	if r := run(0, "status", pid); !strings.Contains(fmt.Sprint(r["output"]), "Profiling is running") || r["healthy"] != true {
		t.Errorf("status: %v", r)
	}
	r := run(exitRefused, "-d", "1", "-f", out, pid)
	if owner, _ := r["profiler_owner"].(map[string]any); owner == nil || owner["action"] != "start" {
		t.Errorf("busy: %v", r)
	}
	r = run(0, "stop", "-f", out, pid)
	if p, _ := r["profile"].(map[string]any); p == nil || p["file"] != out || p["bytes"].(float64) == 0 {
		t.Errorf("stop: %v", r)
	}
}

// cliOnTerminal runs the built CLI with its standard output on a
// pseudo-terminal that passes the bytes on as written (no output
// processing), and returns what the terminal received and stderr.
func cliOnTerminal(t *testing.T, args ...string) (screen, stderr string, code int) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		testenv.Missing(t, "a pseudo-terminal: %v", err)
	}
	defer ptm.Close()
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	tio, err := unix.IoctlGetTermios(int(pts.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Oflag &^= unix.OPOST
	if err := unix.IoctlSetTermios(int(pts.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.BuildCLI(t), args...)
	var errb strings.Builder
	cmd.Stdout, cmd.Stderr = pts, &errb
	err = cmd.Start()
	pts.Close() // the CLI holds the terminal's only other end
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	// The terminal reads EIO once the CLI, its last user, exited.
	read := make(chan []byte, 1)
	go func() {
		data, _ := io.ReadAll(ptm)
		read <- data
	}()
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(<-read), errb.String(), code
}

// TestLiveTerminalGetsNoEscapes (the way back): the pod's user — its
// root or the JVM's own user — appends terminal sequences (OSC 52, OSC 0,
// colours, a C1 CSI) to every agent log and output in the pod. What
// profile start, status and stop print as messages carries them escaped,
// into a pipe too; a profile written to a terminal has them escaped, and
// the same profile written to a pipe is the target's bytes, unchanged.
func TestLiveTerminalGetsNoEscapes(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	testenv.EachWaybackAttacker(t, func(t *testing.T, pod *testenv.Pod) {
		pid := fmt.Sprint(pod.PID)
		run := func(args ...string) (string, string) {
			t.Helper()
			stdout, stderr, code := cli(t, nil, args...)
			if code != 0 || testenv.HasControl(stderr) {
				t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
			}
			return stdout, stderr
		}
		// The attacker races each read back: each place is tried
		// until it was reached, and checked every time.
		var inLog, inStatus, inPipe, inTerminal bool
		for i := 0; i < 20 && !(inLog && inStatus && inPipe); i++ {
			_, stderr := run("profile", "start", "--agent", lib, "-e", "itimer", "-o", "collapsed", pid)
			inLog = strings.Contains(stderr, testenv.WaybackEscaped) || inLog
			status, _ := run("profile", "status", "--agent", lib, pid)
			if testenv.HasControl(status) || !strings.Contains(status, "Profiling is running") {
				t.Fatalf("status printed %q", status)
			}
			inStatus = strings.Contains(status, testenv.WaybackEscaped) || inStatus
			profile, _ := run("profile", "stop", "--agent", lib, pid)
			inPipe = strings.Contains(profile, testenv.WaybackEscapes) || inPipe
			profile, _ = run("profile", "--agent", lib, "-e", "itimer", "-d", "100ms", "-o", "collapsed", pid)
			inPipe = strings.Contains(profile, testenv.WaybackEscapes) || inPipe
		}
		for i := 0; i < 20 && !inTerminal; i++ {
			screen, stderr, code := cliOnTerminal(t, "profile", "--agent", lib, "-e", "itimer", "-d", "100ms", "-o", "collapsed", pid)
			if code != 0 || testenv.HasControl(screen) || testenv.HasControl(stderr) || !strings.Contains(screen, "Target.churn") {
				t.Fatalf("a profile to a terminal: exit %d, screen %q, stderr %q", code, screen, stderr)
			}
			inTerminal = strings.Contains(screen, testenv.WaybackEscaped)
		}
		if !(inLog && inStatus && inPipe && inTerminal) {
			t.Fatalf("the attacker never reached some place in 20 rounds: agent log %v, status %v, profile to a pipe %v, to a terminal %v", inLog, inStatus, inPipe, inTerminal)
		}
	}, "escapes")
}
