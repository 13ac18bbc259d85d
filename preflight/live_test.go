package preflight

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/testenv"
)

func inspect(t *testing.T, pid int) *Report {
	t.Helper()
	r, err := Inspect(context.Background(), pid, Options{})
	if err != nil {
		t.Fatalf("Inspect(%d): %v", pid, err)
	}
	return r
}

func hasEvidence(ev []string, substr string) bool {
	return slices.ContainsFunc(ev, func(e string) bool { return strings.Contains(e, substr) })
}

// TestLivePlainJVMs inspects a plain JVM under every JDK on the machine.
func TestLivePlainJVMs(t *testing.T) {
	for _, jdk := range testenv.JDKs(t) {
		t.Run(jdk.String(), func(t *testing.T) {
			t.Parallel()
			p := testenv.StartJVM(t, testenv.JVMSpec{JDK: jdk})
			before := testenv.DirEntries(t, p.Dir)
			r := inspect(t, p.PID)
			j := r.JVM
			if j.Kind != JVMHotSpot || j.Version != jdk.Version || j.Feature != jdk.Feature || j.Home != jdk.Home {
				t.Errorf("jvm = %+v, want hotspot %s at %s", j, jdk.Version, jdk.Home)
			}
			if j.MainClass != "Target" {
				t.Errorf("main class %q", j.MainClass)
			}
			if j.AttachSocket.Exists || j.AttachSocket.Path != fmt.Sprintf("/tmp/.java_pid%d", p.PID) {
				t.Errorf("attach socket %+v: an untouched JVM has none", j.AttachSocket)
			}
			pr := r.Process
			if !pr.Signals.SIGQUIT.Caught || pr.Signals.SIGQUIT.Ignored {
				t.Errorf("a HotSpot JVM catches SIGQUIT: %+v", pr.Signals.SIGQUIT)
			}
			if pr.Signals.SIGPROF.Caught || pr.Signals.SIGVTALRM.Caught {
				t.Errorf("HotSpot installs neither SIGPROF nor SIGVTALRM: %+v", pr.Signals)
			}
			if pr.State != StateSleeping && pr.State != StateRunning {
				t.Errorf("state %s", pr.State)
			}
			if !pr.SameMountNamespace || !pr.SamePIDNamespace || pr.NSPid != p.PID {
				t.Errorf("namespaces: %+v", pr)
			}
			if int(pr.UID.Effective) != os.Geteuid() || pr.StartTime == 0 || pr.Cwd != p.Dir {
				t.Errorf("process: %+v", pr)
			}
			if r.Jemalloc.Present || r.Tcmalloc.Present || r.Libunwind.Present || len(r.Profilers) != 0 {
				t.Errorf("plain JVM has no allocator or profiler: %+v %+v %+v", r.Jemalloc, r.Tcmalloc, r.Profilers)
			}
			if r.MappedELFs < 5 {
				t.Errorf("mapped ELFs %d", r.MappedELFs)
			}
			// Inspecting changes nothing: no file in the target's cwd or
			// /tmp, no thread dump on its stdout (no SIGQUIT).
			if after := testenv.DirEntries(t, p.Dir); !slices.Equal(before, after) {
				t.Errorf("cwd changed: %v → %v", before, after)
			}
			for _, f := range []string{fmt.Sprintf("/tmp/.java_pid%d", p.PID), fmt.Sprintf("/tmp/.attach_pid%d", p.PID)} {
				if _, err := os.Lstat(f); err == nil {
					t.Errorf("%s exists after a read-only inspection", f)
				}
			}
			if n := testenv.DumpingSIGQUITs(t, p); n != 0 {
				t.Errorf("the target printed %d thread dumps: it received SIGQUIT", n)
			}
		})
	}
}

func TestLiveJemalloc(t *testing.T) {
	je := testenv.Library(t, "libjemalloc.so.2")
	uw := testenv.Library(t, "libunwind.so.8")
	cases := []struct {
		name     string
		env      []string
		state    ProfState
		unwinder string
		option   string
	}{
		{"prof-active", []string{"LD_PRELOAD=" + je, "MALLOC_CONF=prof:true"}, ProfActive, UnwinderLibgcc, "prof=true"},
		{"prof-idle", []string{"LD_PRELOAD=" + je, "MALLOC_CONF=prof:true,prof_active:false"}, ProfIdle, UnwinderLibgcc, "prof_active=false"},
		{"no-conf", []string{"LD_PRELOAD=" + je}, ProfOff, UnwinderLibgcc, ""},
		{"libunwind-first", []string{"LD_PRELOAD=" + uw + " " + je, "MALLOC_CONF=prof:true,lg_prof_sample:0"}, ProfActive, UnwinderLibunwind, "lg_prof_sample=0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := testenv.StartJVM(t, testenv.JVMSpec{Env: c.env, Workers: 1})
			r := inspect(t, p.PID)
			j := r.Jemalloc
			if !j.Present || j.Via != ViaLDPreload || j.Path != je || j.Version != "5.3.0" || j.ProfBuilt != Yes {
				t.Fatalf("jemalloc %+v", j)
			}
			if j.Prof.State != c.state || j.Unwinder != c.unwinder {
				t.Errorf("state %s unwinder %s, want %s %s; %+v", j.Prof.State, j.Unwinder, c.state, c.unwinder, j)
			}
			if c.option != "" {
				k, v, _ := strings.Cut(c.option, "=")
				if j.Prof.Options[k] != v {
					t.Errorf("option %s = %q, want %q", k, j.Prof.Options[k], v)
				}
			}
			if c.unwinder == UnwinderLibunwind && (!r.Libunwind.Present || !r.Libunwind.Preloaded || r.Libunwind.Version == "") {
				t.Errorf("libunwind %+v", r.Libunwind)
			}
			if r.Libunwind.Present && !strings.HasPrefix(r.Libunwind.Version, "1.6") {
				t.Errorf("Debian bookworm's libunwind is 1.6.x, got %+v", r.Libunwind)
			}
			if !hasEvidence(j.Evidence, "5.3.0-0-g") {
				t.Errorf("evidence lacks the version literal: %q", j.Evidence)
			}
		})
	}
}

func TestLiveTcmalloc(t *testing.T) {
	full := testenv.Library(t, "libtcmalloc.so.4")
	minimal := testenv.Library(t, "libtcmalloc_minimal.so.4")
	cases := []struct {
		name          string
		env           []string
		flavor        TcmallocFlavor
		heap          Tristate
		unwinder      string
		heapProfileBy string
	}{
		{"full-heapprofile", []string{"LD_PRELOAD=" + full, "HEAPPROFILE=hp"}, TcmallocFull, Yes, UnwinderLibunwind, "HEAPPROFILE=hp (marked consumed"},
		{"full", []string{"LD_PRELOAD=" + full}, TcmallocFull, No, UnwinderLibunwind, ""},
		{"full-heapcheck-fp", []string{"LD_PRELOAD=" + full, "HEAPCHECK=normal", "TCMALLOC_STACKTRACE_METHOD=generic_fp"}, TcmallocFull, Yes, "generic_fp", "HEAPCHECK=normal"},
		{"minimal", []string{"LD_PRELOAD=" + minimal, "HEAPPROFILE=ignored"}, TcmallocMinimal, No, UnwinderNone, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := testenv.StartJVM(t, testenv.JVMSpec{Env: c.env, Workers: 1})
			r := inspect(t, p.PID)
			tc := r.Tcmalloc
			if !tc.Present || tc.Via != ViaLDPreload || tc.Version != "2.10" {
				t.Fatalf("tcmalloc %+v", tc)
			}
			if tc.Flavor != c.flavor || tc.HeapProfiler != c.heap || tc.Unwinder != c.unwinder {
				t.Errorf("flavor %s heap %s unwinder %s; want %s %s %s", tc.Flavor, tc.HeapProfiler, tc.Unwinder, c.flavor, c.heap, c.unwinder)
			}
			if c.heapProfileBy != "" && !hasEvidence(tc.HeapProfilerBy, c.heapProfileBy) {
				t.Errorf("heap profiler by %q", tc.HeapProfilerBy)
			}
			if r.Jemalloc.Present {
				t.Error("jemalloc reported in a tcmalloc process")
			}
			if c.flavor == TcmallocFull && !r.Libunwind.Present {
				t.Error("full tcmalloc links libunwind, which must be seen")
			}
		})
	}
}

func TestLiveFlagsAndSignals(t *testing.T) {
	t.Run("Xrs", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartJVM(t, testenv.JVMSpec{JVMArgs: []string{"-Xrs"}})
		r := inspect(t, p.PID)
		if v, set := r.JVM.Flag("ReduceSignalUsage"); !v || !set || r.JVM.Flags["ReduceSignalUsage"].Source != "cmdline" {
			t.Errorf("flags %+v", r.JVM.Flags)
		}
		if r.Process.Signals.SIGQUIT.Caught {
			t.Error("-Xrs: the JVM must not catch SIGQUIT")
		}
		// docs/attach-protocol.md: with -Xrs the listener starts at VM start, so the
		// socket exists without any attach.
		if !waitSocket(t, p.PID) {
			t.Error("-Xrs JVM has no attach socket")
		}
		if r := inspect(t, p.PID); !r.JVM.AttachSocket.IsSocket || r.JVM.AttachSocket.Mode&0o077 != 0 {
			t.Errorf("socket %+v", r.JVM.AttachSocket)
		}
	})
	t.Run("DisableAttachMechanism-in-JAVA_TOOL_OPTIONS", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartJVM(t, testenv.JVMSpec{Env: []string{"JAVA_TOOL_OPTIONS=-XX:+DisableAttachMechanism"}})
		r := inspect(t, p.PID)
		f, ok := r.JVM.Flags["DisableAttachMechanism"]
		if !ok || f.Value != "true" || f.Source != "JAVA_TOOL_OPTIONS" {
			t.Errorf("flags %+v", r.JVM.Flags)
		}
	})
	t.Run("_JAVA_OPTIONS-overrides-cmdline", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartJVM(t, testenv.JVMSpec{
			JVMArgs: []string{"-XX:+EnableDynamicAgentLoading"},
			Env:     []string{"_JAVA_OPTIONS=-XX:-EnableDynamicAgentLoading"},
		})
		r := inspect(t, p.PID)
		if f := r.JVM.Flags["EnableDynamicAgentLoading"]; f.Value != "false" || f.Source != "_JAVA_OPTIONS" {
			t.Errorf("flags %+v", r.JVM.Flags)
		}
	})
	t.Run("stopped", func(t *testing.T) {
		t.Parallel()
		p := testenv.StartJVM(t, testenv.JVMSpec{})
		if err := syscall.Kill(p.PID, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if r := inspect(t, p.PID); r.Process.State == StateStopped {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Error("a SIGSTOPped JVM was never reported stopped")
	})
}

func waitSocket(t *testing.T, pid int) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if inspect(t, pid).JVM.AttachSocket.Exists {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func TestLiveNotAJVM(t *testing.T) {
	p := testenv.StartSleeper(t)
	r := inspect(t, p.PID)
	if r.JVM.Kind != JVMNone || r.JVM.AttachSocket.Path != "" {
		t.Errorf("jvm %+v", r.JVM)
	}
	if r.Process.Name != "sleep" {
		t.Errorf("name %q", r.Process.Name)
	}
}

func TestLiveMissingPID(t *testing.T) {
	p := testenv.StartSleeper(t)
	pid := p.PID
	_ = p.Cmd.Process.Kill()
	<-p.Exited()
	_, err := Inspect(context.Background(), pid, Options{})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("dead pid: %v", err)
	}
	for _, pid := range []int{0, -1, 1 << 30} {
		if _, err := Inspect(context.Background(), pid, Options{}); !errors.Is(err, ErrNotFound) {
			t.Errorf("pid %d: %v", pid, err)
		}
	}
}

// TestLiveMallocConfFromMemory runs a C program that links jemalloc and
// exports its own malloc_conf (as an application built with -rdynamic
// does): the option string must be read from the live process's memory.
func TestLiveMallocConfFromMemory(t *testing.T) {
	je := testenv.Library(t, "libjemalloc.so.2")
	prog := testenv.BuildC(t, "jemalloc_app", `
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
const char *malloc_conf = "prof:true,prof_active:false,lg_prof_sample:21";
void *volatile sink;
int main(void) {
	printf("READY\n");
	fflush(stdout);
	for (;;) { sink = malloc(4096); free(sink); usleep(100000); }
}
`, "-rdynamic", "-Wl,--no-as-needed", je)
	p := testenv.Start(t, execCommand(prog))
	// Wait until main runs: before that the loader may not have relocated
	// the pointer yet.
	p.WaitOutput(t, "READY", 10*time.Second)
	r := inspect(t, p.PID)
	j := r.Jemalloc
	if !j.Present || j.Via != ViaMapped {
		t.Fatalf("jemalloc %+v", j)
	}
	src := j.Prof.Sources[0]
	if !src.Set || src.Value != "prof:true,prof_active:false,lg_prof_sample:21" || !strings.Contains(src.Name, prog) {
		t.Errorf("malloc_conf source %+v", src)
	}
	if j.Prof.State != ProfIdle || j.Prof.Options["lg_prof_sample"] != "21" {
		t.Errorf("prof %+v", j.Prof)
	}
	// Without the memory read, the symbol source is unknown, and since
	// nothing later sets prof, so is the state.
	r2, err := Inspect(context.Background(), p.PID, Options{SkipMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Jemalloc.Prof.State != ProfUnknown || len(r2.Unknowns) == 0 {
		t.Errorf("SkipMemory: %+v unknowns %v", r2.Jemalloc.Prof, r2.Unknowns)
	}
}

func TestLiveInspectAgent(t *testing.T) {
	affected, err := InspectAgent(context.Background(), testenv.BuildAgent(t, testenv.AgentAffectedLookalike))
	if err != nil {
		t.Fatal(err)
	}
	if affected.Kind != AgentAsyncProfiler || affected.Version != "3.0-2dba71f" || !affected.ImportsDlIterate || !affected.ExportsOnAttach {
		t.Errorf("affected look-alike: %+v", affected)
	}
	if affected.Machine != "x86-64" || affected.Class != 64 || affected.Libc != "glibc" || len(affected.SHA256) != 64 || !affected.Regular {
		t.Errorf("identity: %+v", affected)
	}
	fixed, err := InspectAgent(context.Background(), testenv.BuildAgent(t, testenv.AgentFixedLookalike))
	if err != nil {
		t.Fatal(err)
	}
	if fixed.Kind != AgentAsyncProfiler || fixed.Version != "4.5" || fixed.ImportsDlIterate {
		t.Errorf("fixed look-alike: %+v", fixed)
	}
	plain, _ := InspectAgent(context.Background(), testenv.BuildAgent(t, testenv.AgentRecordOptions))
	if plain.Kind != AgentJVMTI || plain.Version != "" {
		t.Errorf("plain agent: %+v", plain)
	}
	none, _ := InspectAgent(context.Background(), testenv.BuildAgent(t, testenv.AgentNoOnAttach))
	if none.Kind != AgentNotAgent || none.ExportsOnAttach {
		t.Errorf("non-agent: %+v", none)
	}
	missing, err := InspectAgent(context.Background(), filepath.Join(t.TempDir(), "nope.so"))
	if err != nil || missing.Exists || missing.Error == "" {
		t.Errorf("missing: %+v %v", missing, err)
	}
	// A world-writable copy is reported with who could write it.
	dir := t.TempDir()
	cp := filepath.Join(dir, "libcopy.so")
	data, _ := os.ReadFile(fixed.Path)
	os.WriteFile(cp, data, 0o666)
	os.Chmod(cp, 0o666)
	ww, _ := InspectAgent(context.Background(), cp)
	if !slices.ContainsFunc(ww.WritableBy, func(w Writer) bool { return w.Kind == "everyone" && w.Path == cp }) {
		t.Errorf("world-writable not reported: %+v", ww.WritableBy)
	}
	notELF := filepath.Join(dir, "text.so")
	os.WriteFile(notELF, []byte("hello"), 0o644)
	if a, _ := InspectAgent(context.Background(), notELF); a.Kind != AgentNotAgent || a.Error == "" {
		t.Errorf("not ELF: %+v", a)
	}
}

// TestLiveFlagsFromHsperfdata: a flag set in a -XX:Flags= file (which the
// command line does not show) is read from the JVM's hsperfdata, so the
// rules see it.
func TestLiveFlagsFromHsperfdata(t *testing.T) {
	t.Parallel()
	flags := filepath.Join(t.TempDir(), "hotspotrc")
	if err := os.WriteFile(flags, []byte("+DisableAttachMechanism\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testenv.StartJVM(t, testenv.JVMSpec{JVMArgs: []string{"-XX:+UsePerfData", "-XX:Flags=" + flags}})
	r, err := Inspect(context.Background(), p.PID, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f, ok := r.JVM.Flags["DisableAttachMechanism"]
	if !ok || f.Value != "true" || !strings.HasPrefix(f.Source, "hsperfdata") || r.JVM.PerfData == "" {
		t.Fatalf("flag %+v (set %v), perf data %q, unknowns %+v", f, ok, r.JVM.PerfData, r.Unknowns)
	}
	// Without hsperfdata the flags file stays an unknown, said so.
	q := testenv.StartJVM(t, testenv.JVMSpec{JVMArgs: []string{"-XX:Flags=" + flags}})
	r, err = Inspect(context.Background(), q.PID, Options{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, u := range r.Unknowns {
		found = found || (u.Fact == "jvm.flags" && strings.Contains(u.Reason, "-XX:Flags="))
	}
	if !found {
		t.Errorf("no unknown for the unread flags file: %+v", r.Unknowns)
	}
}
