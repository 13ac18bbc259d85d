package attach

import (
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/attach/hotspot"
	"github.com/safeattach/safeattach/internal/testenv"
)

// loadableAgent builds a JVMTI agent that calls fn from a stub library
// built from stubSrc as stubName (with an optional version script), so
// that the agent's DT_NEEDED and symbol-version needs are what the test
// wants. It returns the agent; the stub is not installed anywhere the
// target's loader looks unless the test puts it there.
func loadableAgent(t *testing.T, stubName, stubSrc, versionScript, fn string, extra ...string) string {
	t.Helper()
	flags := []string{"-shared", "-fPIC", "-Wl,-soname," + stubName}
	if versionScript != "" {
		vs := filepath.Join(t.TempDir(), "stub.map")
		if err := os.WriteFile(vs, []byte(versionScript), 0o644); err != nil {
			t.Fatal(err)
		}
		flags = append(flags, "-Wl,--version-script="+vs)
	}
	stub := testenv.BuildC(t, stubName, stubSrc, flags...)
	src := "extern int " + fn + "(void);\nint Agent_OnAttach(void *vm, char *o, void *r) { (void)vm; (void)o; (void)r; return " + fn + "(); }\n"
	return testenv.BuildC(t, "agent_needs_"+strings.ReplaceAll(stubName, ".", "_"), src,
		append([]string{"-shared", "-fPIC", "-L" + filepath.Dir(stub), "-l:" + stubName}, extra...)...)
}

// TestLiveAgentNotLoadable: agents the JVM's loader would reject are
// refused before anything is sent, naming what is missing: a library the
// target does not have, and a symbol version (GLIBC_2.99) its libc does
// not define. Without the check the JVM would print a dlopen error.
func TestLiveAgentNotLoadable(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	missing := loadableAgent(t, "libsafeattach_stub.so", "int stub_fn(void) { return 0; }\n", "", "stub_fn")
	_, err := Load(context.Background(), p.PID, missing, "", Options{})
	refusedBy(t, err, "agent-not-loadable")
	if !strings.Contains(err.Error(), "not found: libsafeattach_stub.so") {
		t.Errorf("refusal does not name the library: %v", err)
	}
	tooNew := loadableAgent(t, "libc.so.6", "int stub_new(void) { return 0; }\n",
		"GLIBC_2.99 { global: stub_new; local: *; };\n", "stub_new", "-nostdlib")
	_, err = Load(context.Background(), p.PID, tooNew, "", Options{})
	refusedBy(t, err, "agent-not-loadable")
	if !strings.Contains(err.Error(), "GLIBC_2.99 (libc.so.6 at ") {
		t.Errorf("refusal does not name the version: %v", err)
	}
	// What the check prevents: the JVM's own dlopen error, after the load
	// was sent.
	var ae *hotspot.AgentError
	if err := rawLoad(t, p.PID, tooNew, 10*time.Second); !errors.As(err, &ae) || !strings.Contains(ae.Message, "GLIBC_2.99") {
		t.Errorf("the unchecked load of the too-new agent: %v", err)
	}
	// The same agent is loadable where its library is on LD_LIBRARY_PATH.
	dir := filepath.Dir(testenv.BuildC(t, "libsafeattach_stub.so", "int stub_fn(void) { return 0; }\n", "-shared", "-fPIC", "-Wl,-soname,libsafeattach_stub.so"))
	q := testenv.StartJVM(t, testenv.JVMSpec{Env: []string{"LD_LIBRARY_PATH=" + dir}})
	if res, err := Load(context.Background(), q.PID, missing, "", Options{}); err != nil || !res.Healthy {
		t.Errorf("with the library on LD_LIBRARY_PATH: %v", err)
	}
	if !p.Alive() {
		t.Error("the JVM died")
	}
}

// TestAgentForAnotherArchitecture: an agent built for aarch64 (an x86-64
// build whose header says so) is refused by agent-arch-mismatch.
func TestAgentForAnotherArchitecture(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	data, err := os.ReadFile(testenv.BuildAgent(t, testenv.AgentRecordOptions))
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint16(data[18:], uint16(elf.EM_AARCH64))
	other := filepath.Join(t.TempDir(), "librecord_aarch64.so")
	if err := os.WriteFile(other, data, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Load(context.Background(), p.PID, other, "", Options{})
	refusedBy(t, err, "agent-arch-mismatch")
}
