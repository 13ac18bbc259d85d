// Package cismoke is a smoke test a CI pipeline can copy: it starts the
// service's JVM the way the service runs, asserts that safeattach allows
// profiling it, takes a short profile, and asserts the JVM is still
// healthy afterwards. It drives the safeattach CLI, as a pipeline would.
//
// Configure it with environment variables:
//
//	SAFEATTACH     the safeattach binary (default: built from this repository)
//	SMOKE_AGENT    the async-profiler library (default: the look-alike test
//	               agent from this repository, compiled with gcc)
//	SMOKE_JAVA     the java binary (default: Debian's OpenJDK 17)
//	SMOKE_ENV      extra environment of the service, space-separated
//	               (e.g. "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
package cismoke

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func build(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func TestServiceCanBeProfiledSafely(t *testing.T) {
	dir := t.TempDir()
	safeattach := os.Getenv("SAFEATTACH")
	if safeattach == "" {
		safeattach = filepath.Join(dir, "safeattach")
		build(t, "go", "build", "-o", safeattach, "../../cmd/safeattach")
	}
	agent := os.Getenv("SMOKE_AGENT")
	if agent == "" {
		agent = filepath.Join(dir, "libasyncProfiler-lookalike.so")
		build(t, "gcc", "-shared", "-fPIC", "-o", agent, "../../internal/testenv/agents/lookalike_fixed.c")
	}
	java := env("SMOKE_JAVA", "/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
	build(t, filepath.Join(filepath.Dir(java), "javac"), "-d", dir, "testdata/Service.java")

	// Start the service the way it runs in production.
	cmd := exec.Command(java, "-Xmx128m", "-cp", dir, "Service")
	cmd.Env = append(os.Environ(), strings.Fields(os.Getenv("SMOKE_ENV"))...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		// A killed JVM leaves its attach socket behind for the next
		// process that gets its pid.
		os.Remove(fmt.Sprintf("/tmp/.java_pid%d", cmd.Process.Pid))
	})
	up := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "SERVICE UP" {
				up <- true
			}
		}
	}()
	select {
	case <-up:
	case <-time.After(60 * time.Second):
		t.Fatal("the service did not start")
	}
	pid := fmt.Sprint(cmd.Process.Pid)

	// 1. safeattach must allow profiling this service.
	out, err := exec.Command(safeattach, "check", "--json", "--agent", agent, pid).Output()
	var verdict struct {
		Allowed  bool
		Findings []struct{ Rule, Severity, Message string }
	}
	if jerr := json.Unmarshal(out, &verdict); jerr != nil || err != nil || !verdict.Allowed {
		t.Fatalf("safeattach check refused profiling the service (%v): %+v", err, verdict.Findings)
	}

	// 2. A short profile works.
	profile := filepath.Join(dir, "profile.collapsed")
	if out, err := exec.Command(safeattach, "profile", "--agent", agent, "-d", "2", "-f", profile, pid).CombinedOutput(); err != nil {
		t.Fatalf("profile: %v\n%s", err, out)
	}
	if fi, err := os.Stat(profile); err != nil || fi.Size() == 0 {
		t.Fatalf("no profile written: %v", err)
	}

	// 3. The service is still healthy: alive and answering.
	if out, err := exec.Command(safeattach, "jcmd", "--timeout", "10s", pid, "VM.uptime").CombinedOutput(); err != nil {
		t.Fatalf("the JVM no longer answers after profiling: %v\n%s", err, out)
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatal("the service died")
	}
}
