package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

// Inside a target's root, ownership proves nothing (docs/safety.md,
// invariant 12): the pod's uid 0 is root's uid without a user namespace.

// forgeRecords rewrites every owner record in the pod's stores as uid,
// with every capability dropped, adding what a stop used to act on: an
// output on the host, a format and a recording elsewhere. It reports
// whether any record could be rewritten.
func forgeRecords(t *testing.T, pod *testenv.Pod, uid uint32, victim string) bool {
	t.Helper()
	script := `n=0
for f in /tmp/.safeattach*/profiler-*.json; do
  [ -f "$f" ] || continue
  new=$(sed 's|}$|,"output":"` + victim + `","format":"collapsed","recording":"/etc/shadow","event":"cpu"}|' "$f") || continue
  tmp="${f%/*}/.forged"
  if printf '%s' "$new" > "$tmp" 2>/dev/null && mv -f "$tmp" "$f" 2>/dev/null; then n=$((n+1)); fi
done
echo "forged=$n"`
	out, _ := pod.CommandNoCaps(uid, script).CombinedOutput()
	return !strings.Contains(string(out), "forged=0") && strings.Contains(string(out), "forged=")
}

// TestLiveTargetCannotSteerTheStop: root starts a
// profile; the pod's user rewrites the owner record in the pod's /tmp so
// that it names a host file as the output; root's bare stop used to
// write the profile over that host file ("writing <host path>, as the
// start asked"). The stop's output comes from root's own state: standard
// output when the start named no file, the start's own -f when it did.
func TestLiveTargetCannotSteerTheStop(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	pod := testenv.StartPod(t, testenv.PodSpec{})
	pid := fmt.Sprint(pod.PID)
	for _, uid := range []uint32{0, 65534} {
		t.Run(fmt.Sprintf("uid%d", uid), func(t *testing.T) {
			dir := t.TempDir()
			victim := filepath.Join(dir, "victim")
			if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			check := func(what string) {
				t.Helper()
				if data, _ := os.ReadFile(victim); string(data) != "precious\n" {
					t.Fatalf("%s: the host file the pod named was written: %q", what, data)
				}
			}
			// A start that named no file: the stop prints the profile.
			if _, stderr, code := cli(t, nil, "profile", "start", "--agent", lib, "-e", "itimer", pid); code != 0 {
				t.Fatalf("start: exit %d: %s", code, stderr)
			}
			forged := forgeRecords(t, pod, uid, victim)
			if uid == 0 && !forged {
				t.Fatal("the pod's uid 0 could not rewrite the record: the test proves nothing")
			}
			stdout, stderr, code := cli(t, nil, "profile", "stop", "--agent", lib, pid)
			if code != 0 || strings.Contains(stderr, victim) || !strings.Contains(stdout, "[itimer]") && !strings.Contains(stdout, "Total samples") {
				t.Fatalf("stop: exit %d, stdout %q, stderr %q", code, stdout, stderr)
			}
			check("bare stop")
			// A start that named its file: the stop writes that one.
			mine := filepath.Join(dir, "mine.collapsed")
			if _, stderr, code := cli(t, nil, "profile", "start", "--agent", lib, "-e", "itimer", "-f", mine, pid); code != 0 {
				t.Fatalf("start -f: exit %d: %s", code, stderr)
			}
			forgeRecords(t, pod, uid, victim)
			_, stderr, code = cli(t, nil, "profile", "stop", "--agent", lib, pid)
			if code != 0 || !strings.Contains(stderr, "writing "+mine) {
				t.Fatalf("stop after start -f: exit %d, %q", code, stderr)
			}
			check("stop after start -f")
			if data, _ := os.ReadFile(mine); !strings.Contains(string(data), "[itimer]") {
				t.Errorf("%s: %q", mine, data)
			}
		})
	}
}

// TestLiveUserAfterRoot: once root has profiled a JVM (its
// store in the JVM's /tmp is root's), the JVM's own user, not root, can
// still profile it (it used to fail with "owner record: permission
// denied" while check said ALLOWED).
func TestLiveUserAfterRoot(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	pod := testenv.StartPod(t, testenv.PodSpec{})
	pid := fmt.Sprint(pod.PID)
	dir := t.TempDir()
	if _, stderr, code := cli(t, nil, "profile", "--agent", lib, "-e", "itimer", "-d", "1", "-f", filepath.Join(dir, "root.collapsed"), pid); code != 0 {
		t.Fatalf("root's profile: exit %d: %s", code, stderr)
	}
	home := nobodyHome(t, dir, lib)
	out := filepath.Join(home, "user.collapsed")
	if b, code := asNobody(t, home, "profile", "--agent", lib, "-e", "itimer", "-d", "1", "-f", out, pid); code != 0 {
		t.Fatalf("the JVM's user after root: exit %d\n%s", code, b)
	}
	if data, _ := os.ReadFile(out); !strings.Contains(string(data), "[itimer]") {
		t.Errorf("the user's profile: %q", data)
	}
}

// nobodyHome makes a home for nobody under dir (t.TempDir's) and checks
// that nobody can run the CLI and read lib.
func nobodyHome(t *testing.T, dir, lib string) string {
	t.Helper()
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(home, 65534, 65534)
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755) // t.TempDir's own parent
	for _, f := range []string{lib, testenv.BuildCLI(t)} {
		for d := f; d != "/"; d = filepath.Dir(d) {
			if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o005 != 0o005 {
				testenv.Missing(t, "%s is not readable by nobody (%v): cannot run as the JVM's user here", d, fi.Mode())
			}
		}
	}
	return home
}

// asNobody runs the CLI as nobody with home, and returns its output and
// exit code.
func asNobody(t *testing.T, home string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(testenv.BuildCLI(t), args...)
	cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	b, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(b), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(b), 0
}

// TestLiveAnotherUsersStartIsNotFinished: root's detached start is not
// stopped by another user, who knows neither where it writes nor its
// recording (it was stopped, its JFR recording left in the target and a
// flat profile printed, exit 0); root's stop still writes root's file.
// An explicit -f or -o on stop wins over the start's.
func TestLiveAnotherUsersStartIsNotFinished(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	pod := testenv.StartPod(t, testenv.PodSpec{})
	pid := fmt.Sprint(pod.PID)
	dir := t.TempDir()
	home := nobodyHome(t, dir, lib)
	mine := filepath.Join(dir, "root.jfr")
	if _, stderr, code := cli(t, nil, "profile", "start", "--agent", lib, "-e", "itimer", "-f", mine, pid); code != 0 {
		t.Fatalf("root's start: exit %d: %s", code, stderr)
	}
	if out, code := asNobody(t, home, "profile", "stop", "--agent", lib, pid); code != exitRefused || !strings.Contains(out, "another user's start") {
		t.Fatalf("nobody's stop of root's start: exit %d\n%s", code, out)
	}
	if _, stderr, code := cli(t, nil, "profile", "stop", "--agent", lib, pid); code != 0 || !strings.Contains(stderr, "writing "+mine) {
		t.Fatalf("root's stop: exit %d: %s", code, stderr)
	}
	if data, _ := os.ReadFile(mine); len(data) < 4 || string(data[:4]) != "FLR\x00" {
		t.Errorf("root's recording: %d bytes", len(data))
	}
	// -o on stop wins: the profile goes to standard output as collapsed.
	if _, stderr, code := cli(t, nil, "profile", "start", "--agent", lib, "-e", "itimer", "-f", filepath.Join(dir, "start.html"), pid); code != 0 {
		t.Fatalf("start: exit %d: %s", code, stderr)
	}
	stdout, stderr, code := cli(t, nil, "profile", "stop", "--agent", lib, "-o", "collapsed", pid)
	if code != 0 || strings.Contains(stderr, "as the start asked") || !strings.Contains(stdout, "[itimer]") || strings.Contains(stdout, "<html") {
		t.Errorf("stop -o collapsed after start -f x.html: exit %d, stderr %q, stdout %.200q", code, stderr, stdout)
	}
}

// TestLiveTargetLinksStayInTheTarget: the pod's uid 0 makes its dpkg
// database a link to a host file (an image can ship such a link); root's
// inspection, which reads it to date the libunwind the JVM maps, used to
// follow it onto the host and print what it found there.
func TestLiveTargetLinksStayInTheTarget(t *testing.T) {
	t.Parallel()
	unwind := testenv.Library(t, "libunwind.so.8")
	pod := testenv.StartPod(t, testenv.PodSpec{Env: []string{"LD_PRELOAD=" + unwind}})
	canary := filepath.Join(t.TempDir(), "status")
	secret := "Package: libunwind8\nStatus: install ok installed\nVersion: HOST-ONLY-7f3a9\n"
	if err := os.WriteFile(canary, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := pod.CommandNoCaps(0, "mkdir -p /var/lib/dpkg && ln -s "+canary+" /var/lib/dpkg/status").CombinedOutput(); err != nil {
		t.Fatalf("the pod's uid 0 making the link: %v %s", err, out)
	}
	for _, args := range [][]string{{"inspect", "--json"}, {"inspect"}, {"check"}} {
		stdout, stderr, _ := cli(t, nil, append(args, fmt.Sprint(pod.PID))...)
		if strings.Contains(stdout+stderr, "HOST-ONLY-7f3a9") {
			t.Errorf("%v read the host file the pod's link names:\n%s%s", args, stdout, stderr)
		}
	}
}
